// dockerfile-lint runs BuildKit's Dockerfile checks (the rules of `docker build --check`) on each file
// given, without a daemon and without a registry: base images are not fetched, each resolves to an empty
// linux/amd64 config with the usual PATH, so rules about the Dockerfile's own text all apply and none
// depend on a registry answer.
//
//	dockerfile-lint FILE...
//
// Prints FILE:LINE: Rule: detail (url) per finding and exits 1 when there is any, 2 on a usage or
// read error. A Dockerfile may switch rules off with BuildKit's own `# check=skip=Rule` directive.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/client/llb/sourceresolver"
	"github.com/moby/buildkit/frontend/dockerfile/dockerfile2llb"
	"github.com/opencontainers/go-digest"
)

// offlineResolver answers every base image lookup with one fixed config instead of asking a registry.
type offlineResolver struct{}

func (offlineResolver) ResolveImageConfig(_ context.Context, ref string, _ sourceresolver.Opt) (string, digest.Digest, []byte, error) {
	config, err := json.Marshal(map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"rootfs":       map[string]any{"type": "layers"},
		"config":       map[string]any{"Env": []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}},
	})
	if err != nil {
		return "", "", nil, err
	}
	return ref, digest.FromBytes(config), config, nil
}

func lint(ctx context.Context, path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	// The lint results carry the source as an LLB definition; an empty one is enough.
	def, err := llb.Scratch().Marshal(ctx)
	if err != nil {
		return 0, err
	}
	source := llb.NewSourceMap(nil, path, "Dockerfile", data)
	source.Definition = def
	opt := dockerfile2llb.ConvertOpt{MetaResolver: offlineResolver{}, SourceMap: source}
	results, err := dockerfile2llb.DockerfileLint(ctx, data, opt)
	if err != nil {
		return 0, err
	}
	for _, w := range results.Warnings {
		line := 0
		if w.Location != nil && len(w.Location.Ranges) > 0 {
			line = int(w.Location.Ranges[0].Start.Line)
		}
		fmt.Printf("%s:%d: %s: %s (%s)\n", path, line, w.RuleName, w.Detail, w.URL)
	}
	found := len(results.Warnings)
	if results.Error != nil {
		fmt.Printf("%s: error: %s\n", path, results.Error.Message)
		found++
	}
	return found, nil
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: dockerfile-lint FILE...")
		os.Exit(2)
	}
	total := 0
	for _, path := range os.Args[1:] {
		found, err := lint(context.Background(), path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "dockerfile-lint: %s: %v\n", path, err)
			os.Exit(2)
		}
		total += found
	}
	if total > 0 {
		os.Exit(1)
	}
}
