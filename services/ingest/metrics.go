package ingest

import (
	"context"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	buildv1 "github.com/open-balena-builder/builder/proto/builder/build/v1"
)

// metrics count builds, their durations and the bytes users upload.
type metrics struct {
	builds   metric.Int64Counter
	duration metric.Float64Histogram
	uploaded metric.Int64Counter
}

func newMetrics(m metric.Meter) (*metrics, error) {
	if m == nil {
		m = noop.NewMeterProvider().Meter("ingest")
	}
	var out metrics
	var err error
	if out.builds, err = m.Int64Counter("obb.ingest.builds",
		metric.WithDescription("Builds (pushes) that ended, by final state.")); err != nil {
		return nil, err
	}
	if out.duration, err = m.Float64Histogram("obb.ingest.build.duration", metric.WithUnit("s"),
		metric.WithDescription("Time from the upload to the recorded outcome, by final state.")); err != nil {
		return nil, err
	}
	if out.uploaded, err = m.Int64Counter("obb.ingest.upload.bytes", metric.WithUnit("By"),
		metric.WithDescription("Compressed bytes of accepted uploads.")); err != nil {
		return nil, err
	}
	return &out, nil
}

func (m *metrics) ended(state buildv1.BuildState, took time.Duration) {
	attrs := metric.WithAttributes(attribute.String("state", strings.ToLower(strings.TrimPrefix(state.String(), "BUILD_STATE_"))))
	m.builds.Add(context.Background(), 1, attrs)
	m.duration.Record(context.Background(), took.Seconds(), attrs)
}
