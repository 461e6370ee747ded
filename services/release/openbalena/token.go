package openbalena

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// ErrInvalidScope: a repository or action the token endpoint would
// silently drop (it answers 200 with no access rather than an error).
var ErrInvalidScope = errors.New("invalid registry scope")

// RegistryToken asks /auth/v1/token for a registry token with actions
// (pull, push) on each repository ("v2/<hash>", no registry host: a host
// prefix does not parse and gets no access). It authenticates with HTTP
// Basic builder:<builderToken>, the only place the builder token is used.
func (c *Client) RegistryToken(ctx context.Context, builderToken, registry string, repositories, actions []string) (string, error) {
	if err := checkScope(repositories, actions); err != nil {
		return "", err
	}
	query := []param{{"service", registry}}
	joined := strings.Join(actions, ",")
	for _, repo := range repositories {
		query = append(query, param{"scope", "repository:" + repo + ":" + joined})
	}
	var out struct {
		Token string `json:"token"`
	}
	err := c.do(ctx, call{
		method: http.MethodGet,
		path:   "/auth/v1/token",
		query:  query,
		creds:  basic("builder", builderToken),
	}, &out)
	if err != nil {
		return "", err
	}
	if out.Token == "" {
		return "", fmt.Errorf("open-balena-api GET /auth/v1/token: answer has no token")
	}
	return out.Token, nil
}

func checkScope(repositories, actions []string) error {
	if len(repositories) == 0 {
		return fmt.Errorf("%w: no repository", ErrInvalidScope)
	}
	if len(actions) == 0 {
		return fmt.Errorf("%w: no action", ErrInvalidScope)
	}
	for _, a := range actions {
		if a != "pull" && a != "push" {
			return fmt.Errorf("%w: action %q (want pull or push)", ErrInvalidScope, a)
		}
	}
	for _, repo := range repositories {
		if err := checkRepository(repo); err != nil {
			return err
		}
	}
	return nil
}

// checkRepository refuses names the API cannot parse: empty, a registry
// host first ("registry2.example.com/v2/..", "127.0.0.1:5000/v2/.."), a tag
// or digest, or characters outside a repository name.
func checkRepository(repo string) error {
	first, _, _ := strings.Cut(repo, "/")
	switch {
	case repo == "" || strings.HasPrefix(repo, "/") || strings.HasSuffix(repo, "/"):
		return fmt.Errorf("%w: repository %q", ErrInvalidScope, repo)
	case strings.ContainsAny(first, ".:") || first == "localhost":
		return fmt.Errorf("%w: repository %q starts with a registry host; give the name alone (v2/<hash>)", ErrInvalidScope, repo)
	}
	for _, r := range repo {
		if !('a' <= r && r <= 'z' || '0' <= r && r <= '9' || strings.ContainsRune("/._-", r)) {
			return fmt.Errorf("%w: repository %q: %q not allowed", ErrInvalidScope, repo, r)
		}
	}
	return nil
}
