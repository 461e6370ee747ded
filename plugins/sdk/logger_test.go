package sdk_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/open-balena-builder/builder/plugins/sdk"
)

func TestNewLoggerWritesHCLogJSON(t *testing.T) {
	var buf bytes.Buffer
	sdk.NewLogger(&buf, slog.LevelDebug).Warn("pushing", "layer", "abc")
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatalf("not JSON: %q", buf.String())
	}
	if m["@message"] != "pushing" || m["@level"] != "warn" || m["layer"] != "abc" {
		t.Fatalf("line %v", m)
	}
	if _, err := time.Parse("2006-01-02T15:04:05.000000Z07:00", m["@timestamp"].(string)); err != nil {
		t.Fatalf("@timestamp: %v", err)
	}
}
