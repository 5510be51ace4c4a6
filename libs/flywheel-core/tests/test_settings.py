from flywheel_core.settings import describe_setting_errors


def test_names_variable_value_and_expectation():
    errors = [{"loc": ("workers",), "input": "0", "msg": "Input should be greater than or equal to 1"}]
    assert describe_setting_errors(errors, "FLYWHEEL_X_") == (
        "Config 'FLYWHEEL_X_WORKERS' has value '0': expected greater than or equal to 1"
    )


def test_cross_field_checks_and_several_problems_are_all_reported():
    errors = [
        {"loc": (), "msg": "Value error, splits leave no training rows"},
        {"loc": ("port",), "input": "x", "msg": "Input should be a valid integer"},
    ]
    assert describe_setting_errors(errors, "FLYWHEEL_X_") == (
        "Config 'FLYWHEEL_X_*': splits leave no training rows; Config 'FLYWHEEL_X_PORT' has value 'x': expected a valid integer"
    )
