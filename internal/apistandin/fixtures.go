package apistandin

import (
	"crypto/rand"
	"fmt"
	"math/big"
	"regexp"
	"strings"
)

// deviceTypes are the device types the stand-in knows, with their cpu
// architecture slugs.
func deviceTypes() []struct{ slug, name, arch string } {
	return []struct{ slug, name, arch string }{
		{"genericx86-64-ext", "Generic x86_64 (GPT)", "amd64"},
		{"intel-nuc", "Intel NUC", "amd64"},
		{"raspberrypi4-64", "Raspberry Pi 4 (using 64bit OS)", "aarch64"},
		{"generic-aarch64", "Generic AARCH64", "aarch64"},
		{"raspberrypi3", "Raspberry Pi 3", "armv7hf"},
		{"raspberry-pi", "Raspberry Pi (v1 / Zero / Zero W)", "rpi"},
		{"qemux86", "QEMU X86 32bit", "i386"},
	}
}

// seed inserts the cpu architectures, device types and the default
// application type.
func (s *Server) seed() {
	now := s.now()
	archIDs := map[string]int64{}
	for _, slug := range []string{"rpi", "armv7hf", "aarch64", "i386-nlp", "i386", "amd64"} {
		id := s.nextID("cpu_architecture")
		archIDs[slug] = id
		s.st.put("cpu_architecture", row{"id": id, "created_at": now, "modified_at": now, "slug": slug})
	}
	for _, dt := range deviceTypes() {
		id := s.nextID("device_type")
		s.st.put("device_type", row{
			"id": id, "created_at": now, "modified_at": now, "slug": dt.slug, "name": dt.name,
			"is_of__cpu_architecture": archIDs[dt.arch],
		})
	}
	s.st.put("application_type", row{
		"id": s.nextID("application_type"), "created_at": now, "modified_at": now, "name": "Default",
		"supports_web_url": true, "supports_multicontainer": true, "supports_gateway_mode": true,
		"requires_payment": false, "is_legacy": false, "slug": "default",
	})
}

// AddUser adds a user (or, for an existing username, another API key of
// the same user) and returns a new API key for it: 32 random alphanumeric
// characters, like open-balena's. Its email is <username>@example.com.
func (s *Server) AddUser(username string) (apiKey string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var u *user
	for _, existing := range s.users {
		if existing.username == username {
			u = existing
		}
	}
	if u == nil {
		s.actorSeq++
		u = &user{id: s.nextID("user"), actor: s.actorSeq, username: username, email: username + "@example.com"}
		now := s.now()
		s.st.put("user", row{"id": u.id, "created_at": now, "modified_at": now, "actor": u.actor, "username": username})
		s.users[u.id] = u
	}
	key := randomAlnum(32)
	s.apiKeys[key] = u.id
	return key
}

// Fleet describes a fleet (application) added with AddFleet.
type Fleet struct {
	ID         int64
	Slug       string // lower(org + "/" + appName)
	AppName    string
	DeviceType string // device type slug
	Arch       string // cpu architecture slug
	UUID       string
}

// AddFleet adds a fleet owned by organization org (created if needed),
// tracking its latest release. It panics on an unknown device type, an
// app name the real API refuses (4..100 characters of [a-zA-Z0-9_-]) or a
// duplicate slug.
func (s *Server) AddFleet(org, appName, deviceType string) Fleet {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(appName); n < 4 || n > 100 || !regexp.MustCompile(`^[a-zA-Z0-9_-]+$`).MatchString(appName) {
		panic(fmt.Sprintf("apistandin: invalid app name %q", appName))
	}
	var dt, arch row
	for _, r := range s.st.rows("device_type") {
		if r.str("slug") == deviceType {
			dt = r
		}
	}
	if dt == nil {
		panic(fmt.Sprintf("apistandin: unknown device type %q", deviceType))
	}
	arch, _ = s.st.get("cpu_architecture", dt.int("is_of__cpu_architecture"))
	slug := strings.ToLower(org + "/" + appName)
	for _, a := range s.st.rows("application") {
		if a.str("slug") == slug {
			panic(fmt.Sprintf("apistandin: fleet %q exists", slug))
		}
	}
	now := s.now()
	var orgID int64
	for _, o := range s.st.rows("organization") {
		if o.str("handle") == org {
			orgID = o.id()
		}
	}
	if orgID == 0 {
		orgID = s.nextID("organization")
		s.st.put("organization", row{"id": orgID, "created_at": now, "modified_at": now, "name": org, "handle": org})
	}
	s.actorSeq++
	f := Fleet{
		ID: s.nextID("application"), Slug: slug, AppName: appName, DeviceType: deviceType,
		Arch: arch.str("slug"), UUID: randomHex(16),
	}
	s.st.put("application", row{
		"id": f.ID, "created_at": now, "modified_at": now, "actor": s.actorSeq,
		"should_track_latest_release": true, "is_of__class": "fleet", "organization": orgID,
		"app_name": appName, "slug": slug, "is_for__device_type": dt.id(), "application_type": int64(1),
		"is_host": false, "is_archived": false, "uuid": f.UUID, "is_public": false,
	})
	return f
}

func randomAlnum(n int) string {
	const chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	var b strings.Builder
	for i := 0; i < n; i++ {
		k, _ := rand.Int(rand.Reader, big.NewInt(int64(len(chars))))
		b.WriteByte(chars[k.Int64()])
	}
	return b.String()
}
