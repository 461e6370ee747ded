package sdk

import (
	"context"

	"github.com/hashicorp/go-plugin"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"

	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

// PluginName is the name an executor plugin is dispensed under.
const PluginName = "executor"

// Handshake is shared by the host and every plugin. The cookie is a UX guard
// (it stops someone running a plugin binary by hand), not security.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  APIVersion,
	MagicCookieKey:   "OBB_EXECUTOR_PLUGIN",
	MagicCookieValue: "6f0c5b1e-executor-plugin-v1",
}

// GRPCPlugin is the go-plugin glue for Executor. Impl is set on the plugin
// side; the host side leaves it nil.
type GRPCPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	Impl Executor
}

var _ plugin.GRPCPlugin = (*GRPCPlugin)(nil)

// GRPCServer registers Impl on the plugin's gRPC server.
func (p *GRPCPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pluginv1.RegisterExecutorPluginServiceServer(s, &grpcServer{impl: p.Impl})
	return nil
}

// GRPCClient returns an Executor that calls the plugin over conn.
func (p *GRPCPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, conn *grpc.ClientConn) (any, error) {
	return &grpcClient{client: pluginv1.NewExecutorPluginServiceClient(conn)}, nil
}

// PluginSets maps each API version to the plugins served under it; one
// binary may speak several versions (Vault dbplugin v5 style).
func PluginSets(impl Executor) map[int]plugin.PluginSet {
	return map[int]plugin.PluginSet{
		APIVersion: {PluginName: &GRPCPlugin{Impl: impl}},
	}
}

// Serve serves impl as an executor plugin. A plugin's main calls it and it
// returns when the host closes the plugin.
func Serve(impl Executor) {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig:  Handshake,
		VersionedPlugins: PluginSets(impl),
		GRPCServer:       newGRPCServer,
	})
}

// newGRPCServer is plugin.DefaultGRPCServer with OpenTelemetry tracing.
func newGRPCServer(opts []grpc.ServerOption) *grpc.Server {
	opts = append(opts, grpc.StatsHandler(otelgrpc.NewServerHandler()))
	return plugin.DefaultGRPCServer(opts)
}
