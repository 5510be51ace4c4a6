"""Feature services: the versioned sets of features a model is trained and served with.

A model records the feature service it was trained on (metadata.json `feature_service`). Changing the
features means a new service (fraud_v2) next to this one, never an edit of fraud_v1.
"""

from feast import FeatureService

from views import card_activity, merchant_risk, transaction_context

fraud_v1 = FeatureService(
    name="fraud_v1",
    features=[card_activity, merchant_risk, transaction_context],
    description="Fraud model v1 inputs: card activity, merchant risk and the transaction context.",
    tags={"team": "fraud", "model": "fraud", "version": "1"},
)
