package scheduler

import (
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	schedulerv1 "github.com/open-balena-builder/builder/proto/builder/scheduler/v1"
)

// viewLocked returns a copy of a host with the scheduler's fields filled.
func (p *pool) viewLocked(h *host) *schedulerv1.Host {
	v := proto.Clone(h.info).(*schedulerv1.Host)
	v.Running = int32(h.running)
	v.Draining = h.draining
	v.Healthy = h.healthy(p.now())
	v.LastSeen = timestamppb.New(h.lastSeen)
	return v
}
