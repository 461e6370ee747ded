package openbalena

import (
	"encoding/json"
	"strconv"
	"time"
)

// MaxBodyBytes is open-balena-api's JSON body limit (Express "512kb").
// Larger bodies are answered 413.
const MaxBodyBytes = 512 << 10

// ImagePatch is what balena-cli's deploy sends when an image ends (only
// these fields). Zero fields are not sent.
type ImagePatch struct {
	Status        string
	EndTimestamp  time.Time
	PushTimestamp time.Time
	ContentHash   string // sha256:<64 hex>
	ImageSize     int64  // sent as a decimal string (Big Integer in v7)
	Dockerfile    string
	ProjectType   string
	ErrorMessage  string
	BuildLog      string
}

func (p ImagePatch) body() map[string]any {
	b := map[string]any{}
	set := func(k, v string) {
		if v != "" {
			b[k] = v
		}
	}
	set("status", p.Status)
	set("content_hash", p.ContentHash)
	set("dockerfile", p.Dockerfile)
	set("project_type", p.ProjectType)
	set("error_message", p.ErrorMessage)
	set("build_log", p.BuildLog)
	if !p.EndTimestamp.IsZero() {
		b["end_timestamp"] = epochMS(p.EndTimestamp)
	}
	if !p.PushTimestamp.IsZero() {
		b["push_timestamp"] = epochMS(p.PushTimestamp)
	}
	if p.ImageSize > 0 {
		b["image_size"] = strconv.FormatInt(p.ImageSize, 10)
	}
	return b
}

// EncodedSize is the size in bytes of the JSON body PatchImage sends.
func (p ImagePatch) EncodedSize() int {
	raw, err := json.Marshal(p.body())
	if err != nil {
		return MaxBodyBytes + 1
	}
	return len(raw)
}
