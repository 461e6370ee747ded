// Package sdk is the boundary between the executor service and its build
// plugins (docker-tcp, buildkit, ssh-docker).
//
// A plugin implements [Executor] and calls [Serve] from its main. The host
// starts a plugin binary with [Launch] and talks to it through the same
// [Executor] interface; the gRPC contract in proto/builder/plugin/v1 mirrors
// the interface, plus Cancel: the host's way to stop a build by job id,
// which the SDK turns into the cancel of that Build's ctx (a build's one
// way to stop; the host side is a [Canceller]). Package sdktest holds the
// in-process harness, a function-field fake and the contract suite every
// plugin runs. The Docker plugins are made of package engine.
package sdk
