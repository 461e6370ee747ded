package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/registry"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"

	"github.com/open-balena-builder/builder/plugins/sdk"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

// registryAuth is the X-Registry-Auth value for a registry bearer token:
// base64url(JSON {"registrytoken": token}). The daemon sends the token to
// the registry as is, without calling the token realm.
func registryAuth(token string) (string, error) {
	if token == "" {
		return "", nil
	}
	auth, err := registry.EncodeAuthConfig(registry.AuthConfig{RegistryToken: token})
	if err != nil {
		return "", fmt.Errorf("encode registry auth: %w", err)
	}
	return auth, nil
}

// push pushes ref (with its tag) from the daemon and returns the manifest
// digest from the final aux message. Progress goes to logs.
func push(ctx context.Context, c *client.Client, ref, token string, logs sdk.LogSink) (string, error) {
	auth, err := registryAuth(token)
	if err != nil {
		return "", err
	}
	if err := logs(&pluginv1.Log{Text: "Uploading images", Info: true}); err != nil {
		return "", err
	}
	body, err := c.ImagePush(ctx, ref, image.PushOptions{RegistryAuth: auth})
	if err != nil {
		return "", engineError("push "+ref, err)
	}
	defer body.Close()

	var (
		progress progressLines
		result   types.PushResult
	)
	err = readMessages(body, func(m *jsonmessage.JSONMessage) error {
		if msg := messageError(m); msg != "" {
			if err := logs(&pluginv1.Log{Text: msg, Error: true}); err != nil {
				return err
			}
			return errors.New(msg)
		}
		if m.Aux != nil {
			if err := json.Unmarshal(*m.Aux, &result); err != nil {
				return fmt.Errorf("decode push result: %w", err)
			}
		}
		if m.Status != "" {
			return logs(progress.line(m))
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	if result.Digest == "" {
		return "", fmt.Errorf("push %s: the daemon reported no digest", ref)
	}
	return result.Digest, nil
}
