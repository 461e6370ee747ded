package stack

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Postgres is a private PostgreSQL server (Debian's postgresql package) on
// 127.0.0.1:<free port>, its data in a directory of its own, trust
// authentication for user postgres. PostgreSQL refuses to run as root: it
// runs as the postgres system user.
type Postgres struct {
	Dir  string
	port int
	bin  string
}

// URL is the connection URL of the server's postgres database.
func (p *Postgres) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.port)
}

// StartPostgres initialises a cluster in a new directory and starts it.
func StartPostgres(ctx context.Context, logf func(string, ...any)) (*Postgres, error) {
	if logf == nil {
		logf = nopLogf
	}
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	if len(bins) == 0 {
		return nil, fmt.Errorf("PostgreSQL not found under /usr/lib/postgresql (run scripts/deps.sh)")
	}
	sort.Strings(bins)
	bin := filepath.Dir(bins[len(bins)-1])
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("the postgres system user: %w (run scripts/deps.sh)", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	dir, err := os.MkdirTemp("/tmp", "obb-pg-")
	if err != nil {
		return nil, err
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	p := &Postgres{Dir: dir, port: port, bin: bin}
	if err := p.run(ctx, "initdb", "-D", dir+"/data", "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off", port, dir)
	if err := p.run(ctx, "pg_ctl", "-D", dir+"/data", "-l", dir+"/postgres.log", "-o", opts, "-w", "-t", "60", "start"); err != nil {
		log, _ := os.ReadFile(dir + "/postgres.log")
		os.RemoveAll(dir)
		return nil, fmt.Errorf("%w\n%s", err, log)
	}
	logf("[postgres] %s", p.URL())
	return p, nil
}

func (p *Postgres) run(ctx context.Context, prog string, args ...string) error {
	cmd := exec.CommandContext(ctx, "runuser", append([]string{"-u", "postgres", "--", filepath.Join(p.bin, prog)}, args...)...)
	cmd.Dir = p.Dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w\n%s", prog, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// SQL runs query with psql and returns its output, unaligned, tuples only.
func (p *Postgres) SQL(ctx context.Context, query string) (string, error) {
	cmd := exec.CommandContext(ctx, "runuser", "-u", "postgres", "--", filepath.Join(p.bin, "psql"),
		"-h", "127.0.0.1", "-p", strconv.Itoa(p.port), "-U", "postgres", "-tAc", query)
	cmd.Dir = p.Dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("psql: %w\n%s", err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// Stop stops the server and removes its directory.
func (p *Postgres) Stop() error {
	err := p.run(context.Background(), "pg_ctl", "-D", p.Dir+"/data", "-m", "immediate", "-w", "stop")
	if rerr := os.RemoveAll(p.Dir); err == nil {
		err = rerr
	}
	return err
}
