package scheduler

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	buildv1 "github.com/open-balena-builder/builder/proto/builder/build/v1"
)

// metrics are what operators watch: the queue, the hosts' slots and how
// jobs end.
type metrics struct {
	waiting  metric.Int64UpDownCounter
	jobs     metric.Int64Counter
	duration metric.Float64Histogram
}

func newMetrics(m metric.Meter, p *pool) (*metrics, error) {
	if m == nil {
		m = noop.NewMeterProvider().Meter("scheduler")
	}
	var out metrics
	var err error
	if out.waiting, err = m.Int64UpDownCounter("obb.scheduler.jobs.waiting",
		metric.WithDescription("Jobs waiting for a free slot on a host of their architecture.")); err != nil {
		return nil, err
	}
	// Exported from the start (0), so that dashboards and alerts see it.
	out.waiting.Add(context.Background(), 0)
	if out.jobs, err = m.Int64Counter("obb.scheduler.jobs",
		metric.WithDescription("Jobs that ended, by final state.")); err != nil {
		return nil, err
	}
	if out.duration, err = m.Float64Histogram("obb.scheduler.job.duration", metric.WithUnit("s"),
		metric.WithDescription("Time from a job's submission to its end, by final state.")); err != nil {
		return nil, err
	}
	slots, err := m.Int64ObservableGauge("obb.scheduler.host.slots",
		metric.WithDescription("Concurrent builds a host takes (max_concurrent)."))
	if err != nil {
		return nil, err
	}
	used, err := m.Int64ObservableGauge("obb.scheduler.host.running",
		metric.WithDescription("Builds running on a host."))
	if err != nil {
		return nil, err
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for _, h := range p.list() {
			attrs := metric.WithAttributes(attribute.String("host", h.GetName()), attribute.Bool("healthy", h.GetHealthy()), attribute.Bool("draining", h.GetDraining()))
			o.ObserveInt64(slots, int64(h.GetMaxConcurrent()), attrs)
			o.ObserveInt64(used, int64(h.GetRunning()), attrs)
		}
		return nil
	}, slots, used)
	return &out, err
}

func (m *metrics) ended(state buildv1.JobState, since time.Time) {
	attrs := metric.WithAttributes(attribute.String("state", stateName(state)))
	m.jobs.Add(context.Background(), 1, attrs)
	m.duration.Record(context.Background(), time.Since(since).Seconds(), attrs)
}

func stateName(s buildv1.JobState) string {
	switch s {
	case buildv1.JobState_JOB_STATE_SUCCEEDED:
		return "succeeded"
	case buildv1.JobState_JOB_STATE_FAILED:
		return "failed"
	case buildv1.JobState_JOB_STATE_CANCELLED:
		return "cancelled"
	}
	return "unknown"
}
