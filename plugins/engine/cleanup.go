package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
)

// cleanupTimeout bounds the wait for a cancelled build's containers to go.
const cleanupTimeout = 15 * time.Second

// removeContainers makes sure the containers a failed or cancelled build
// ran are gone. The classic builder kills and removes them itself when the
// request is cancelled, but asynchronously: this waits for that and
// force-removes what is still there. ctx should not be the cancelled one.
func removeContainers(ctx context.Context, c *client.Client, ids []string) error {
	ctx, cancel := context.WithTimeout(ctx, cleanupTimeout)
	defer cancel()
	var errs []error
	for _, id := range ids {
		if err := removeContainer(ctx, c, id); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func removeContainer(ctx context.Context, c *client.Client, id string) error {
	for {
		err := c.ContainerRemove(ctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true})
		if err == nil || cerrdefs.IsNotFound(err) {
			return nil
		}
		// Conflict: the daemon is removing it already; wait until it is gone.
		select {
		case <-ctx.Done():
			return fmt.Errorf("remove build container %s: %w (last error: %w)", id, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
