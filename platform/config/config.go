// Package config loads the builder's configuration: the original
// open-balena-builder's environment variables, OBB_* variables for what
// they cannot say, and an optional YAML file for many hosts per
// architecture. Invalid configuration fails at start with the field named.
package config

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/open-balena-builder/builder/platform/hostrules"
)

// Config is the whole configuration of one obb process.
type Config struct {
	// TLD is BALENA_TLD: api.<tld>, registry2.<tld>, delta.<tld> derive from it.
	TLD string `yaml:"balena_tld"`
	// APIURL is open-balena-api's base URL. API_HOST may be a host
	// ("api.example.com", https assumed) or a URL ("http://127.0.0.1:3000").
	APIURL string `yaml:"api_url"`
	// DeltaURL is open-balena-delta's base URL (DELTA_HOST); empty: no deltas.
	DeltaURL string `yaml:"delta_url"`
	// DeltaTimeout is OBB_DELTA_TIMEOUT: how long a release waits for its
	// deltas before it is finalized without the missing ones.
	DeltaTimeout time.Duration `yaml:"delta_timeout"`
	// RegistryHost is REGISTRY2_HOST, the registry images are pushed to.
	RegistryHost string `yaml:"registry_host"`
	// BuilderToken is TOKEN_AUTH_BUILDER_TOKEN (only for /auth/v1/token).
	BuilderToken string `yaml:"-"`
	// BuildKit is DOCKER_BUILDKIT: the default for hosts that do not say.
	BuildKit bool `yaml:"buildkit"`

	// Hosts are the Docker hosts that build.
	Hosts []Host `yaml:"hosts"`

	Listen Listen `yaml:"listen"`
	// DataDir holds uploaded build contexts.
	DataDir string `yaml:"data_dir"`
	// PluginDir holds executor plugin binaries (obb-plugin-<name>).
	PluginDir string `yaml:"plugin_dir"`
	// Limits on uploads and builds.
	Limits Limits `yaml:"limits"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level"`

	// AdminToken is OBB_ADMIN_TOKEN, the operator token of the admin
	// listener; empty: one is made at first start in <data dir>/admin-token.
	AdminToken string `yaml:"-"`
	// TLS is the builder's own mTLS between its services.
	TLS TLS `yaml:"tls"`
	// DatabaseURL is OBB_DATABASE_URL: PostgreSQL for the builds in flight
	// (several builders may share it); empty: SQLite in the data dir.
	DatabaseURL string `yaml:"-"`
	// Instance is OBB_INSTANCE_ID, this builder's name in the database;
	// empty: one made at first start, kept in <data dir>/instance-id.
	Instance string `yaml:"instance_id"`
	// ShutdownGrace is how long a stopping builder (SIGTERM) lets running
	// builds finish before it cancels them (OBB_SHUTDOWN_GRACE).
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
	// InstanceLease is OBB_INSTANCE_LEASE: a builder sharing the database
	// that has not renewed its lease for this long is dead to the others,
	// which free its host slots and settle its builds. Renewed every third.
	InstanceLease time.Duration `yaml:"instance_lease"`
	// Placement is OBB_PLACEMENT: "affinity" (a job goes to the host that
	// built the fleet's service last when it has a free slot) or "spread".
	Placement string `yaml:"placement"`
}

// TLS names the files of the services' mTLS (OBB_TLS_CA, OBB_TLS_CERT,
// OBB_TLS_KEY): required when services run in separate processes.
type TLS struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// Enabled tells whether mTLS is configured.
func (t TLS) Enabled() bool { return t.CA != "" || t.Cert != "" || t.Key != "" }

// Listen holds the addresses each service listens on.
type Listen struct {
	// HTTP serves /v3/build (balena-cli) and the REST gateway.
	HTTP      string `yaml:"http"`
	Ingest    string `yaml:"ingest"`
	Scheduler string `yaml:"scheduler"`
	Executor  string `yaml:"executor"`
	Release   string `yaml:"release"`
	// Admin is the operator surface: gRPC and REST for hosts and every
	// build, /metrics; always behind the operator token.
	Admin string `yaml:"admin"`
	// Metrics serves GET /metrics on its own, without a token (optional:
	// the admin address serves it too, with the token).
	Metrics string `yaml:"metrics"`
}

// Limits bound what one push may use.
type Limits struct {
	// MaxUploadBytes bounds the compressed upload (OBB_MAX_UPLOAD_BYTES).
	MaxUploadBytes int64 `yaml:"max_upload_bytes"`
	// MaxContextBytes bounds the uncompressed tar (OBB_MAX_CONTEXT_BYTES).
	MaxContextBytes int64 `yaml:"max_context_bytes"`
	// MaxExpansionRatio bounds uncompressed/compressed bytes of an upload
	// (OBB_MAX_EXPANSION_RATIO): a gzip bomb stops early.
	MaxExpansionRatio int `yaml:"max_expansion_ratio"`
	// MaxEntries bounds the number of tar entries (OBB_MAX_ENTRIES).
	MaxEntries int `yaml:"max_entries"`
	// UploadTimeout bounds a whole upload (OBB_UPLOAD_TIMEOUT).
	UploadTimeout time.Duration `yaml:"upload_timeout"`
	// UploadMinRate is the slowest upload accepted, in bytes per second
	// over UploadRateWindow (OBB_UPLOAD_MIN_RATE, OBB_UPLOAD_RATE_WINDOW).
	UploadMinRate    int64         `yaml:"upload_min_rate"`
	UploadRateWindow time.Duration `yaml:"upload_rate_window"`
	// MaxBuilds and MaxBuildsPerUser bound the pushes in progress
	// (OBB_MAX_BUILDS, OBB_MAX_BUILDS_PER_USER); beyond, HTTP 429.
	MaxBuilds        int `yaml:"max_builds"`
	MaxBuildsPerUser int `yaml:"max_builds_per_user"`
	// MaxLogBytes bounds a build's log kept in memory for watchers, and
	// MaxLogLineBytes one line of it (OBB_MAX_LOG_BYTES,
	// OBB_MAX_LOG_LINE_BYTES).
	MaxLogBytes     int `yaml:"max_log_bytes"`
	MaxLogLineBytes int `yaml:"max_log_line_bytes"`
	// BuildTimeout bounds one build, queue time included.
	BuildTimeout time.Duration `yaml:"build_timeout"`
}

// Host is one Docker host.
type Host struct {
	Name string `yaml:"name"`
	// Plugin drives the host: docker-tcp (default), buildkit, ssh-docker.
	Plugin   string `yaml:"plugin"`
	Endpoint string `yaml:"endpoint"`
	// NativeArchs are the CPU architecture slugs built natively.
	NativeArchs []string `yaml:"native_archs"`
	// EmulatedArchs are built under QEMU on this host.
	EmulatedArchs []string `yaml:"emulated_archs"`
	MaxConcurrent int      `yaml:"max_concurrent"`
	TLSCA         string   `yaml:"tls_ca"`
	TLSCert       string   `yaml:"tls_cert"`
	TLSKey        string   `yaml:"tls_key"`
	// SSH material for ssh:// endpoints (the ssh-docker plugin).
	SSHKey         string `yaml:"ssh_key"`
	SSHCertificate string `yaml:"ssh_certificate"`
	SSHKnownHosts  string `yaml:"ssh_known_hosts"`
	// BuildKit overrides DOCKER_BUILDKIT for this host.
	BuildKit *bool `yaml:"buildkit"`
	// NetworkMode is the network of RUN steps: "" (the daemon's default),
	// "none", "host", "default" or a network name. OBB_BUILD_NETWORK sets it
	// for the DOCKER_HOST_* hosts. A daemon without a bridge network (dockerd
	// --bridge=none) needs "none" or "host" for BuildKit builds.
	NetworkMode string `yaml:"network_mode"`
	// AllowPlaintext accepts tcp:// without TLS (port 2375) for this host.
	AllowPlaintext bool `yaml:"allow_plaintext"`
}

// UsesBuildKit tells whether builds on h use BuildKit.
func (h Host) UsesBuildKit(def bool) bool {
	if h.BuildKit != nil {
		return *h.BuildKit
	}
	return def
}

// Architecture families: what a host of each Docker architecture builds
// natively, and what it can build under emulation.
var (
	amd64Native = []string{"amd64", "i386", "i386-nlp"}
	arm64Native = []string{"aarch64", "armv7hf", "rpi"}
)

// Defaults returns the configuration before env and file are applied.
func Defaults() Config {
	return Config{
		Listen: Listen{
			HTTP:      ":80",
			Ingest:    "127.0.0.1:9101",
			Scheduler: "127.0.0.1:9102",
			Executor:  "127.0.0.1:9103",
			Release:   "127.0.0.1:9104",
			Admin:     "127.0.0.1:9100",
		},
		DataDir:       "/var/lib/obb",
		LogLevel:      "info",
		ShutdownGrace: time.Minute,
		InstanceLease: 30 * time.Second,
		DeltaTimeout:  10 * time.Minute,
		Placement:     "affinity",
		Limits: Limits{
			MaxUploadBytes:    2 << 30,
			MaxContextBytes:   4 << 30,
			MaxExpansionRatio: 200,
			MaxEntries:        200_000,
			UploadTimeout:     time.Hour,
			UploadMinRate:     16 << 10,
			UploadRateWindow:  30 * time.Second,
			MaxBuilds:         50,
			MaxBuildsPerUser:  5,
			MaxLogBytes:       8 << 20,
			MaxLogLineBytes:   64 << 10,
			BuildTimeout:      2 * time.Hour,
		},
	}
}

// Load reads the YAML file at path (if not empty), then the environment
// (which wins), fills what derives from BALENA_TLD, and validates.
func Load(path string, getenv func(string) string) (Config, error) {
	c := Defaults()
	if path != "" {
		f, err := os.Open(path)
		if err != nil {
			return c, fmt.Errorf("config file: %w", err)
		}
		defer f.Close()
		dec := yaml.NewDecoder(f)
		dec.KnownFields(true)
		if err := dec.Decode(&c); err != nil {
			return c, fmt.Errorf("config file %s: %w", path, err)
		}
	}
	if err := c.applyEnv(getenv); err != nil {
		return c, err
	}
	c.derive()
	return c, c.Validate()
}

func (c *Config) applyEnv(getenv func(string) string) error {
	set := func(dst *string, key string) {
		if v := getenv(key); v != "" {
			*dst = v
		}
	}
	set(&c.TLD, "BALENA_TLD")
	if v := getenv("API_HOST"); v != "" {
		c.APIURL = hostURL(v)
	}
	if v := getenv("DELTA_HOST"); v != "" {
		c.DeltaURL = hostURL(v)
	}
	set(&c.RegistryHost, "REGISTRY2_HOST")
	set(&c.BuilderToken, "TOKEN_AUTH_BUILDER_TOKEN")
	set(&c.DataDir, "OBB_DATA_DIR")
	set(&c.PluginDir, "OBB_PLUGIN_DIR")
	set(&c.LogLevel, "OBB_LOG_LEVEL")
	set(&c.Listen.HTTP, "OBB_HTTP_ADDR")
	set(&c.Listen.Ingest, "OBB_INGEST_ADDR")
	set(&c.Listen.Scheduler, "OBB_SCHEDULER_ADDR")
	set(&c.Listen.Executor, "OBB_EXECUTOR_ADDR")
	set(&c.Listen.Release, "OBB_RELEASE_ADDR")
	set(&c.Listen.Metrics, "OBB_METRICS_ADDR")
	set(&c.Listen.Admin, "OBB_ADMIN_ADDR")
	set(&c.AdminToken, "OBB_ADMIN_TOKEN")
	set(&c.DatabaseURL, "OBB_DATABASE_URL")
	set(&c.Instance, "OBB_INSTANCE_ID")
	set(&c.Placement, "OBB_PLACEMENT")
	set(&c.TLS.CA, "OBB_TLS_CA")
	set(&c.TLS.Cert, "OBB_TLS_CERT")
	set(&c.TLS.Key, "OBB_TLS_KEY")
	if v := getenv("DOCKER_BUILDKIT"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("DOCKER_BUILDKIT: %q is not a boolean (use 0 or 1)", v)
		}
		c.BuildKit = b
	}
	var errs []error
	for _, d := range []struct {
		key string
		dst *time.Duration
	}{
		{"OBB_BUILD_TIMEOUT", &c.Limits.BuildTimeout},
		{"OBB_UPLOAD_TIMEOUT", &c.Limits.UploadTimeout},
		{"OBB_UPLOAD_RATE_WINDOW", &c.Limits.UploadRateWindow},
		{"OBB_SHUTDOWN_GRACE", &c.ShutdownGrace},
		{"OBB_INSTANCE_LEASE", &c.InstanceLease},
		{"OBB_DELTA_TIMEOUT", &c.DeltaTimeout},
	} {
		if v := getenv(d.key); v != "" {
			x, err := time.ParseDuration(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %q is not a duration (e.g. 30s, 1h)", d.key, v))
				continue
			}
			*d.dst = x
		}
	}
	for _, n := range []struct {
		key string
		dst *int64
	}{
		{"OBB_MAX_UPLOAD_BYTES", &c.Limits.MaxUploadBytes},
		{"OBB_MAX_CONTEXT_BYTES", &c.Limits.MaxContextBytes},
		{"OBB_UPLOAD_MIN_RATE", &c.Limits.UploadMinRate},
	} {
		if v := getenv(n.key); v != "" {
			x, err := strconv.ParseInt(v, 10, 64)
			if err != nil || x < 0 {
				errs = append(errs, fmt.Errorf("%s: %q is not a number of bytes", n.key, v))
				continue
			}
			*n.dst = x
		}
	}
	for _, n := range []struct {
		key string
		dst *int
	}{
		{"OBB_MAX_EXPANSION_RATIO", &c.Limits.MaxExpansionRatio},
		{"OBB_MAX_ENTRIES", &c.Limits.MaxEntries},
		{"OBB_MAX_BUILDS", &c.Limits.MaxBuilds},
		{"OBB_MAX_BUILDS_PER_USER", &c.Limits.MaxBuildsPerUser},
		{"OBB_MAX_LOG_BYTES", &c.Limits.MaxLogBytes},
		{"OBB_MAX_LOG_LINE_BYTES", &c.Limits.MaxLogLineBytes},
	} {
		if v := getenv(n.key); v != "" {
			x, err := strconv.Atoi(v)
			if err != nil || x < 0 {
				errs = append(errs, fmt.Errorf("%s: %q is not a positive number", n.key, v))
				continue
			}
			*n.dst = x
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, e := range []struct{ key, name string }{{"DOCKER_HOST_AMD64", "amd64"}, {"DOCKER_HOST_ARM64", "arm64"}} {
		v := getenv(e.key)
		if v == "" {
			continue
		}
		h := Host{Name: e.name, Plugin: "docker-tcp", Endpoint: v, MaxConcurrent: 2, AllowPlaintext: true,
			NetworkMode: getenv("OBB_BUILD_NETWORK")}
		if err := dockerTLS(&h, strings.ToUpper(e.name), getenv); err != nil {
			return err
		}
		if e.name == "amd64" {
			h.NativeArchs, h.EmulatedArchs = amd64Native, arm64Native
		} else {
			h.NativeArchs, h.EmulatedArchs = arm64Native, amd64Native
		}
		c.Hosts = append(c.Hosts, h)
	}
	return nil
}

// dockerTLS applies Docker's own TLS convention to a host from
// DOCKER_HOST_<ARCH>: DOCKER_TLS_VERIFY=1 with the certificates in
// DOCKER_CERT_PATH (ca.pem, cert.pem, key.pem), or the per-architecture
// DOCKER_TLS_VERIFY_<ARCH> and DOCKER_CERT_PATH_<ARCH>, which win.
func dockerTLS(h *Host, arch string, getenv func(string) string) error {
	pick := func(key string) (string, string) {
		if v := getenv(key + "_" + arch); v != "" {
			return key + "_" + arch, v
		}
		return key, getenv(key)
	}
	verifyKey, verify := pick("DOCKER_TLS_VERIFY")
	pathKey, certPath := pick("DOCKER_CERT_PATH")
	if verify == "" {
		return nil
	}
	on, err := strconv.ParseBool(verify)
	if err != nil {
		return fmt.Errorf("%s: %q is not a boolean (use 1 or 0)", verifyKey, verify)
	}
	if !on {
		return nil
	}
	if certPath == "" {
		if home, err := os.UserHomeDir(); err == nil {
			certPath = filepath.Join(home, ".docker")
		}
	}
	for _, f := range []string{"ca.pem", "cert.pem", "key.pem"} {
		if _, err := os.Stat(filepath.Join(certPath, f)); err != nil {
			return fmt.Errorf("%s=1 for DOCKER_HOST_%s: %s/%s: %v (set %s to the directory holding ca.pem, cert.pem and key.pem)",
				verifyKey, arch, certPath, f, err, pathKey)
		}
	}
	h.TLSCA, h.TLSCert, h.TLSKey = filepath.Join(certPath, "ca.pem"), filepath.Join(certPath, "cert.pem"), filepath.Join(certPath, "key.pem")
	h.AllowPlaintext = false
	return nil
}

// hostURL turns API_HOST/DELTA_HOST into a URL: a bare host gets https://,
// as the original builder did.
func hostURL(v string) string {
	if strings.Contains(v, "://") {
		return strings.TrimRight(v, "/")
	}
	return "https://" + strings.TrimRight(v, "/")
}

func (c *Config) derive() {
	if c.TLD != "" {
		if c.APIURL == "" {
			c.APIURL = "https://api." + c.TLD
		}
		if c.RegistryHost == "" {
			c.RegistryHost = "registry2." + c.TLD
		}
	}
	for i := range c.Hosts {
		h := &c.Hosts[i]
		if h.Plugin == "" {
			h.Plugin = "docker-tcp"
		}
		if h.MaxConcurrent == 0 {
			h.MaxConcurrent = 2
		}
	}
}

// Validate checks the configuration and names the first bad field.
func (c Config) Validate() error {
	var errs []error
	if c.APIURL == "" {
		errs = append(errs, errors.New("API_HOST (or BALENA_TLD): open-balena-api's address is required"))
	} else if u, err := url.Parse(c.APIURL); err != nil || u.Host == "" {
		errs = append(errs, fmt.Errorf("API_HOST: %q is not a host or URL", c.APIURL))
	}
	if c.RegistryHost == "" {
		errs = append(errs, errors.New("REGISTRY2_HOST (or BALENA_TLD): the registry host is required"))
	}
	if c.BuilderToken == "" {
		errs = append(errs, errors.New("TOKEN_AUTH_BUILDER_TOKEN: required to get registry push tokens"))
	}
	if c.Placement != "affinity" && c.Placement != "spread" {
		errs = append(errs, fmt.Errorf("OBB_PLACEMENT: %q is not affinity or spread", c.Placement))
	}
	if c.InstanceLease < 3*time.Second {
		errs = append(errs, fmt.Errorf("OBB_INSTANCE_LEASE: %s is too short (at least 3s; it is renewed every third)", c.InstanceLease))
	}
	if len(c.Hosts) == 0 {
		errs = append(errs, errors.New("DOCKER_HOST_AMD64 or DOCKER_HOST_ARM64 (or hosts: in the config file): at least one Docker host is required"))
	}
	seen := map[string]bool{}
	for i, h := range c.Hosts {
		field := fmt.Sprintf("hosts[%d]", i)
		if h.Name == "" {
			errs = append(errs, fmt.Errorf("%s.name: required", field))
		} else if seen[h.Name] {
			errs = append(errs, fmt.Errorf("%s.name: %q is used twice", field, h.Name))
		}
		seen[h.Name] = true
		u, err := url.Parse(h.Endpoint)
		switch {
		case h.Endpoint == "":
			errs = append(errs, fmt.Errorf("%s.endpoint: required", field))
		case err != nil:
			errs = append(errs, fmt.Errorf("%s.endpoint: %v", field, err))
		case u.Scheme != "tcp" && u.Scheme != "unix" && u.Scheme != "ssh":
			errs = append(errs, fmt.Errorf("%s.endpoint: %q: scheme must be tcp://, unix:// or ssh://", field, h.Endpoint))
		case hostrules.Plaintext(h.Endpoint, h.TLSCA, h.TLSCert) && !h.AllowPlaintext:
			errs = append(errs, fmt.Errorf("%s.endpoint: %q has no TLS: anyone who reaches it is root on the host; set tls_ca, tls_cert and tls_key (Docker's port 2376), or allow_plaintext: true", field, h.Endpoint))
		}
		if (h.TLSCert == "") != (h.TLSKey == "") {
			errs = append(errs, fmt.Errorf("%s: tls_cert and tls_key go together", field))
		}
		switch h.Plugin {
		case "", "docker-tcp", "ssh-docker":
		case "buildkit":
			// A standalone buildkitd: tcp:// (mTLS, by the rules above) or unix://.
			if err == nil && u.Scheme == "ssh" {
				errs = append(errs, fmt.Errorf("%s.endpoint: %q: the buildkit plugin reaches buildkitd at tcp:// or unix://", field, h.Endpoint))
			}
			if m := h.NetworkMode; m != "" && m != "default" && m != "none" && m != "host" {
				errs = append(errs, fmt.Errorf("%s.network_mode: %q: buildkitd knows none, host and default", field, m))
			}
		}
		if err == nil && u.Scheme != "ssh" && h.SSHKey+h.SSHCertificate+h.SSHKnownHosts != "" {
			errs = append(errs, fmt.Errorf("%s: ssh_key, ssh_certificate and ssh_known_hosts are for ssh:// endpoints", field))
		}
		if len(h.NativeArchs)+len(h.EmulatedArchs) == 0 {
			errs = append(errs, fmt.Errorf("%s.native_archs: at least one architecture is required", field))
		}
		for _, a := range append(append([]string{}, h.NativeArchs...), h.EmulatedArchs...) {
			if _, ok := hostrules.Platform(a); !ok {
				errs = append(errs, fmt.Errorf("%s: unknown architecture %q (use amd64, i386, i386-nlp, aarch64, armv7hf, rpi)", field, a))
			}
		}
		if h.MaxConcurrent < 0 {
			errs = append(errs, fmt.Errorf("%s.max_concurrent: must be positive", field))
		}
		if !hostrules.ValidNetworkMode(h.NetworkMode) {
			errs = append(errs, fmt.Errorf("%s.network_mode (OBB_BUILD_NETWORK): %q: use none, host, default or a network name ([a-zA-Z0-9][a-zA-Z0-9_.-]*)", field, h.NetworkMode))
		}
	}
	if c.Limits.BuildTimeout <= 0 {
		errs = append(errs, errors.New("limits.build_timeout: must be positive"))
	}
	if c.Limits.MaxBuilds < 1 || c.Limits.MaxBuildsPerUser < 1 {
		errs = append(errs, errors.New("limits.max_builds and max_builds_per_user (OBB_MAX_BUILDS, OBB_MAX_BUILDS_PER_USER): at least 1"))
	}
	if t := c.TLS; t.Enabled() && (t.CA == "" || t.Cert == "" || t.Key == "") {
		errs = append(errs, errors.New("tls (OBB_TLS_CA, OBB_TLS_CERT, OBB_TLS_KEY): all three go together"))
	}
	return errors.Join(errs...)
}
