// Package sdktest helps test executor plugins: an in-process go-plugin
// harness (the real gRPC boundary, no subprocess), a function-field fake
// Executor and the contract suite every plugin runs against a real daemon.
package sdktest

import (
	"testing"

	"github.com/hashicorp/go-plugin"

	"github.com/open-balena-builder/builder/plugins/sdk"
)

// Serve serves impl over go-plugin's in-process gRPC connection and returns
// the host-side Executor, exactly what sdk.Launch hands out for a real
// plugin process. Everything is closed when the test ends.
func Serve(t testing.TB, impl sdk.Executor) sdk.Executor {
	t.Helper()
	client, _ := plugin.TestPluginGRPCConn(t, false, sdk.PluginSets(impl)[sdk.APIVersion])
	// Close asks the server to shut down (go-plugin's controller service).
	t.Cleanup(func() { _ = client.Close() })
	raw, err := client.Dispense(sdk.PluginName)
	if err != nil {
		t.Fatalf("dispense %q: %v", sdk.PluginName, err)
	}
	exec, ok := raw.(sdk.Executor)
	if !ok {
		t.Fatalf("dispensed %T, not an sdk.Executor", raw)
	}
	return exec
}
