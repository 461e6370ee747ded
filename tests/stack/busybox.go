package stack

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// BusyboxApplets are the /bin symlinks to busybox in the image.
var BusyboxApplets = []string{
	"sh", "ls", "cat", "echo", "uname", "sleep", "mkdir", "rm", "touch", "true", "false",
	"env", "find", "wc", "head", "tail", "cp", "mv", "ln", "chmod", "grep", "sed", "tar",
	"id", "pwd", "test", "[", "date", "printf", "tee", "dirname", "basename", "stat",
	"sha256sum", "hostname", "ps", "kill", "xargs", "sort", "uniq", "tr", "cut", "expr",
	"awk", "seq", "du", "df", "which", "readlink", "gzip", "wget",
}

// imageEpoch is the fixed timestamp of everything in the image, so the same
// busybox binary always gives the same image id.
var imageEpoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// NormalizeArch maps uname-style names to Go/OCI ones ("x86_64" -> "amd64",
// "aarch64" -> "arm64") and rejects anything but amd64 and arm64.
func NormalizeArch(arch string) (string, error) {
	switch arch {
	case "amd64", "x86_64":
		return "amd64", nil
	case "arm64", "aarch64", "arm64/v8":
		return "arm64", nil
	}
	return "", fmt.Errorf("unsupported arch %q (want amd64 or arm64)", arch)
}

// BusyboxImageTar returns a `docker save`-format archive of a one-layer
// image for linux/arch built from the static busybox binary at busyboxPath,
// tagged with tags, or "busybox:latest" when none are given (a tag without
// ":tag" gets ":latest").
func BusyboxImageTar(arch, busyboxPath string, tags ...string) ([]byte, error) {
	arch, err := NormalizeArch(arch)
	if err != nil {
		return nil, err
	}
	bin, err := os.ReadFile(busyboxPath)
	if err != nil {
		return nil, fmt.Errorf("busybox binary: %w (run scripts/deps.sh)", err)
	}
	if len(bin) < 20 || string(bin[:4]) != "\x7fELF" {
		return nil, fmt.Errorf("%s is not an ELF binary", busyboxPath)
	}
	// e_machine at offset 18 (little endian): 0x3e x86-64, 0xb7 aarch64.
	machine := map[string]byte{"amd64": 0x3e, "arm64": 0xb7}[arch]
	if bin[18] != machine || bin[19] != 0 {
		return nil, fmt.Errorf("%s is not a %s binary (e_machine %#x)", busyboxPath, arch, bin[18])
	}

	layer, err := busyboxLayer(bin)
	if err != nil {
		return nil, err
	}
	ls := sha256.Sum256(layer)
	diffID := "sha256:" + hex.EncodeToString(ls[:])
	layerDir := hex.EncodeToString(ls[:])

	type cfgConfig struct {
		Env        []string `json:"Env"`
		Cmd        []string `json:"Cmd"`
		WorkingDir string   `json:"WorkingDir"`
	}
	cfg := struct {
		Architecture string    `json:"architecture"`
		Variant      string    `json:"variant,omitempty"`
		OS           string    `json:"os"`
		Created      time.Time `json:"created"`
		Config       cfgConfig `json:"config"`
		RootFS       struct {
			Type    string   `json:"type"`
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
		History []map[string]any `json:"history"`
	}{
		Architecture: arch,
		OS:           "linux",
		Created:      imageEpoch,
		Config: cfgConfig{
			Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			Cmd: []string{"sh"},
		},
		History: []map[string]any{{
			"created":    imageEpoch,
			"created_by": "obb tests/stack: static busybox (" + arch + ")",
		}},
	}
	if arch == "arm64" {
		cfg.Variant = "v8"
	}
	cfg.RootFS.Type = "layers"
	cfg.RootFS.DiffIDs = []string{diffID}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	cs := sha256.Sum256(cfgJSON)
	cfgName := hex.EncodeToString(cs[:]) + ".json"

	if len(tags) == 0 {
		tags = []string{"busybox"}
	}
	var repoTags []string
	for _, t := range tags {
		t = normalizeTag(t)
		if t != "" && !contains(repoTags, t) {
			repoTags = append(repoTags, t)
		}
	}
	manifest, err := json.Marshal([]map[string]any{{
		"Config":   cfgName,
		"RepoTags": repoTags,
		"Layers":   []string{layerDir + "/layer.tar"},
	}})
	if err != nil {
		return nil, err
	}

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: imageEpoch, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: layerDir + "/", Mode: 0o755, ModTime: imageEpoch, Typeflag: tar.TypeDir, Format: tar.FormatPAX}); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name string
		data []byte
	}{
		{layerDir + "/VERSION", []byte("1.0")},
		{layerDir + "/layer.tar", layer},
		{cfgName, cfgJSON},
		{"manifest.json", manifest},
	} {
		if err := add(f.name, f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// busyboxLayer is the uncompressed layer tar: /bin/busybox, its applet
// symlinks, /usr/bin/env, a minimal /etc, and the usual empty dirs.
func busyboxLayer(bin []byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdr := func(h *tar.Header) error {
		h.ModTime = imageEpoch
		h.Format = tar.FormatPAX
		return tw.WriteHeader(h)
	}
	dirs := []struct {
		name string
		mode int64
	}{
		{"bin/", 0o755}, {"dev/", 0o755}, {"etc/", 0o755}, {"home/", 0o755}, {"proc/", 0o555},
		{"root/", 0o700}, {"sys/", 0o555}, {"tmp/", 0o1777}, {"usr/", 0o755}, {"usr/bin/", 0o755},
		{"usr/sbin/", 0o755}, {"var/", 0o755}, {"var/tmp/", 0o1777},
	}
	for _, d := range dirs {
		if err := hdr(&tar.Header{Name: d.name, Mode: d.mode, Typeflag: tar.TypeDir}); err != nil {
			return nil, err
		}
	}
	if err := hdr(&tar.Header{Name: "bin/busybox", Mode: 0o755, Size: int64(len(bin)), Typeflag: tar.TypeReg}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, err
	}
	for _, a := range BusyboxApplets {
		if err := hdr(&tar.Header{Name: "bin/" + a, Linkname: "busybox", Mode: 0o777, Typeflag: tar.TypeSymlink}); err != nil {
			return nil, err
		}
	}
	if err := hdr(&tar.Header{Name: "usr/bin/env", Linkname: "/bin/busybox", Mode: 0o777, Typeflag: tar.TypeSymlink}); err != nil {
		return nil, err
	}
	files := []struct{ name, data string }{
		{"etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n"},
		{"etc/group", "root:x:0:\nnogroup:x:65534:\n"},
		{"etc/hostname", "busybox\n"},
		{"etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost\n"},
		{"etc/resolv.conf", ""},
	}
	for _, f := range files {
		if err := hdr(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), Typeflag: tar.TypeReg}); err != nil {
			return nil, err
		}
		if _, err := tw.Write([]byte(f.data)); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// LoadBusybox loads a busybox image for arch ("amd64" or "arm64") built from
// the static binary at busyboxPath into the daemon at dockerHost, tagged
// tags (default "busybox:latest"), with POST /images/load. It then checks that the
// daemon reports the image with the right architecture.
func LoadBusybox(ctx context.Context, dockerHost, arch, busyboxPath string, tags ...string) error {
	arch, err := NormalizeArch(arch)
	if err != nil {
		return err
	}
	archive, err := BusyboxImageTar(arch, busyboxPath, tags...)
	if err != nil {
		return err
	}
	e, err := NewEngine(dockerHost)
	if err != nil {
		return err
	}
	out, err := e.Stream(ctx, http.MethodPost, "/images/load?quiet=1", bytes.NewReader(archive),
		http.Header{"Content-Type": {"application/x-tar"}}, nil)
	if err != nil {
		return fmt.Errorf("load busybox into %s: %w", dockerHost, err)
	}
	if !strings.Contains(out, "Loaded image") {
		return fmt.Errorf("load busybox into %s: unexpected answer %q", dockerHost, out)
	}
	var img struct {
		Architecture string
		Os           string
	}
	first := "busybox:latest"
	if len(tags) > 0 {
		first = normalizeTag(tags[0])
	}
	if err := e.JSON(ctx, http.MethodGet, "/images/"+url.PathEscape(first)+"/json", nil, nil, &img); err != nil {
		return err
	}
	if img.Architecture != arch || img.Os != "linux" {
		return fmt.Errorf("%s on %s is %s/%s, want linux/%s", first, dockerHost, img.Os, img.Architecture, arch)
	}
	return nil
}

// normalizeTag adds ":latest" to a reference without a tag or digest.
func normalizeTag(ref string) string {
	ref = strings.TrimSpace(ref)
	if ref == "" || strings.Contains(ref, "@") {
		return ref
	}
	last := ref[strings.LastIndex(ref, "/")+1:]
	if !strings.Contains(last, ":") {
		ref += ":latest"
	}
	return ref
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
