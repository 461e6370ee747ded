package hostrules

import "testing"

func TestValidNetworkMode(t *testing.T) {
	for m, want := range map[string]bool{
		"": true, "none": true, "host": true, "default": true, "my-net_1.x": true,
		"-bad": false, "a b": false, "net;rm": false, "../x": false,
	} {
		if got := ValidNetworkMode(m); got != want {
			t.Errorf("ValidNetworkMode(%q) = %v, want %v", m, got, want)
		}
	}
}

func TestPlaintext(t *testing.T) {
	tests := []struct {
		endpoint, ca, cert string
		want               bool
	}{
		{"tcp://10.0.0.1:2375", "", "", true},
		{"tcp://10.0.0.1:2376", "/ca.pem", "", false},
		{"tcp://10.0.0.1:2376", "", "/cert.pem", false},
		{"unix:///var/run/docker.sock", "", "", false},
		{"ssh://builder@10.0.0.1", "", "", false},
		{"TCP://10.0.0.1:2375", "", "", true},
	}
	for _, tt := range tests {
		if got := Plaintext(tt.endpoint, tt.ca, tt.cert); got != tt.want {
			t.Errorf("Plaintext(%q, %q, %q) = %v", tt.endpoint, tt.ca, tt.cert, got)
		}
	}
}

func TestPlatform(t *testing.T) {
	for arch, want := range map[string]string{"amd64": "linux/amd64", "i386": "linux/386", "i386-nlp": "linux/386",
		"aarch64": "linux/arm64/v8", "armv7hf": "linux/arm/v7", "rpi": "linux/arm/v6", "sparc": ""} {
		got, ok := Platform(arch)
		if got != want || ok != (want != "") {
			t.Errorf("Platform(%q) = %q, %v; want %q", arch, got, ok, want)
		}
	}
}
