package usererr

import (
	"errors"
	"fmt"
	"testing"
)

func TestAs(t *testing.T) {
	tests := []struct {
		err  error
		want string
		ok   bool
	}{
		{New("upload is empty"), "upload is empty", true},
		{fmt.Errorf("plan: %w", New("service %q: no Dockerfile", "web")), `service "web": no Dockerfile`, true},
		{errors.New("disk full"), "", false},
		{nil, "", false},
	}
	for _, tt := range tests {
		ue, ok := As(tt.err)
		if ok != tt.ok || ok && ue.Msg != tt.want {
			t.Errorf("As(%v) = %v, %v; want %q, %v", tt.err, ue, ok, tt.want, tt.ok)
		}
	}
}
