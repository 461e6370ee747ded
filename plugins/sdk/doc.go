// Package sdk is the boundary between the executor service and its build
// plugins (docker-tcp, buildkit, ssh-docker).
//
// A plugin implements [Executor] and calls [Serve] from its main. The host
// starts a plugin binary with [Launch] and talks to it through the same
// [Executor] interface; the gRPC contract in proto/builder/plugin/v1 mirrors
// the interface one to one. Package sdktest holds the in-process harness, a
// function-field fake and the contract suite every plugin runs.
package sdk
