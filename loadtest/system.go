package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Infra is where PostgreSQL and RabbitMQ are.
type Infra struct {
	PG        string // PostgreSQL server URL without a database, e.g. postgres://postgres@localhost:5432
	AMQP      string // RabbitMQ URL without a vhost
	RabbitAPI string // management API with credentials
}

// System is the four services from bin/ started against scratch state:
// their own databases, RabbitMQ virtual host and Mailpit, all removed by
// Close. The orders a run leaves half-way through the saga go away with
// them instead of being worked off by the next `make run`.
type System struct {
	Infra
	Tag       string // names the scratch databases and the vhost
	Bin       string
	Dir       string // logs and the email service's record
	Env       map[string]string
	Ports     map[string]int
	procs     map[string]*exec.Cmd
	done      map[string]chan struct{}
	mailpitUp bool
}

// Databases are the services' scratch databases.
func (s *System) Databases() []string { return []string{s.Tag + "_order", s.Tag + "_payment"} }

// VHost is the scratch virtual host.
func (s *System) VHost() string { return s.Tag }

// URL is a service's base URL ("gateway", "order", …, "mailpit" for its API).
func (s *System) URL(name string) string { return fmt.Sprintf("http://127.0.0.1:%d", s.Ports[name]) }

// PID is a running process of the system, 0 when it is not running.
func (s *System) PID(name string) int {
	if c := s.procs[name]; c != nil && c.Process != nil {
		select {
		case <-s.done[name]:
		default:
			return c.Process.Pid
		}
	}
	return 0
}

// systems numbers the systems of this process, for unique names.
var systems atomic.Int64

// StartSystem creates the scratch state and starts Mailpit and the given
// services (in this order: order, payment, email, gateway are waited for
// until ready). Close undoes all of it, also after a failed start.
func StartSystem(ctx context.Context, in Infra, bin string, env map[string]string, services ...string) (*System, error) {
	dir, err := os.MkdirTemp("", "loadtest-")
	if err != nil {
		return nil, err
	}
	s := &System{Infra: in, Tag: fmt.Sprintf("lt_%d_%d_%d", os.Getpid(), systems.Add(1), time.Now().Unix()%1_000_000), Bin: bin, Dir: dir, Env: env,
		Ports: map[string]int{}, procs: map[string]*exec.Cmd{}, done: map[string]chan struct{}{}}
	if err := s.start(ctx, services); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *System) start(ctx context.Context, services []string) error {
	for _, b := range services {
		if _, err := os.Stat(filepath.Join(s.Bin, b)); err != nil {
			return fmt.Errorf("%s/%s is missing; run make build", s.Bin, b)
		}
	}
	conn, err := pgx.Connect(ctx, s.PG+"/postgres?sslmode=disable")
	if err != nil {
		return fmt.Errorf("PostgreSQL at %s: %w", s.PG, err)
	}
	defer conn.Close(ctx)
	for _, db := range s.Databases() {
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+db); err != nil {
			return fmt.Errorf("create database %s: %w", db, err)
		}
	}
	if err := s.rabbit(ctx, http.MethodPut, "/api/vhosts/"+s.Tag, ""); err != nil {
		return err
	}
	if err := s.rabbit(ctx, http.MethodPut, "/api/permissions/"+s.Tag+"/"+s.rabbitUser(), `{"configure":".*","write":".*","read":".*"}`); err != nil {
		return err
	}
	mailpit, err := mailpitBinary()
	if err != nil {
		return err
	}
	if err := s.startMailpit(ctx, mailpit); err != nil {
		return err
	}
	s.mailpitUp = true
	common := map[string]string{
		"AMQP_URL":       strings.TrimRight(s.AMQP, "/") + "/" + s.Tag,
		"SMTP_HOST":      "127.0.0.1",
		"SMTP_PORT":      fmt.Sprint(s.Ports["smtp"]),
		"EMAIL_SENT_DIR": filepath.Join(s.Dir, "email-sent"),
		// The load generator is one client: the gateway's per-client limit
		// would measure itself.
		"RATE_LIMIT_RPS": "0",
	}
	maps.Copy(common, s.Env)
	// The gateway starts last, told where the others listen.
	ordered := slices.DeleteFunc(slices.Clone(services), func(n string) bool { return n == "gateway" })
	if len(ordered) < len(services) {
		ordered = append(ordered, "gateway")
	}
	for _, name := range ordered {
		env := map[string]string{"PORT": "0", "LISTEN_ADDR_FILE": filepath.Join(s.Dir, name+".addr")}
		switch name {
		case "order":
			env["DATABASE_URL"] = s.PG + "/" + s.Tag + "_order?sslmode=disable"
		case "payment":
			env["DATABASE_URL"] = s.PG + "/" + s.Tag + "_payment?sslmode=disable"
		case "gateway":
			env["ORDER_SERVICE_URL"], env["PAYMENT_SERVICE_URL"], env["EMAIL_SERVICE_URL"] = s.URL("order"), s.URL("payment"), s.URL("email")
		}
		for k, v := range common {
			if _, ok := env[k]; !ok {
				env[k] = v
			}
		}
		if err := s.spawn(name, filepath.Join(s.Bin, name), env); err != nil {
			return err
		}
		port, err := listening(ctx, env["LISTEN_ADDR_FILE"], 60*time.Second, s.done[name])
		if err != nil {
			return fmt.Errorf("%s: %w (log: %s)", name, err, filepath.Join(s.Dir, name+".log"))
		}
		s.Ports[name] = port
	}
	for _, name := range services {
		if err := waitHTTP(ctx, s.URL(name)+"/readyz", 60*time.Second, s.done[name]); err != nil {
			return fmt.Errorf("%s: %w (log: %s)", name, err, filepath.Join(s.Dir, name+".log"))
		}
	}
	return nil
}

// startMailpit starts Mailpit on two ports picked free (it cannot report
// the ones it got, as the services do through LISTEN_ADDR_FILE), and on
// two others when another process took one first and Mailpit exited.
func (s *System) startMailpit(ctx context.Context, mailpit string) error {
	var err error
	for range 3 {
		for _, n := range []string{"smtp", "mailpit"} {
			if s.Ports[n], err = freePort(); err != nil {
				return err
			}
		}
		if err = s.spawn("mailpit", mailpit, nil, "--smtp", fmt.Sprintf("127.0.0.1:%d", s.Ports["smtp"]),
			"--listen", fmt.Sprintf("127.0.0.1:%d", s.Ports["mailpit"]), "--max", "0", "--quiet", "--disable-version-check",
			"--smtp-auth-accept-any", "--smtp-auth-allow-insecure"); err != nil {
			return err
		}
		err = waitHTTP(ctx, s.URL("mailpit")+"/api/v1/messages?limit=1", 30*time.Second, s.done["mailpit"])
		if err == nil {
			time.Sleep(200 * time.Millisecond) // an answer from another process's Mailpit, ours exiting, is told below
		}
		select {
		case <-s.done["mailpit"]: // it exited (a port was taken): try two others
			err = errors.New("exited: a port was taken")
		default:
			if err == nil {
				return nil
			}
			return fmt.Errorf("mailpit: %w (log: %s)", err, filepath.Join(s.Dir, "mailpit.log"))
		}
	}
	return fmt.Errorf("mailpit: %w (log: %s)", err, filepath.Join(s.Dir, "mailpit.log"))
}

// spawn starts a process with its output in Dir/name.log.
func (s *System) spawn(name, path string, env map[string]string, args ...string) error {
	logf, err := os.Create(filepath.Join(s.Dir, name+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if env != nil {
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	s.procs[name], s.done[name] = cmd, done
	return nil
}

// Stop stops the named processes gracefully (SIGTERM, then SIGKILL after 20 s).
func (s *System) Stop(names ...string) {
	for _, n := range names {
		if c := s.procs[n]; c != nil {
			_ = c.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, n := range names {
		if c := s.procs[n]; c != nil {
			select {
			case <-s.done[n]:
			case <-time.After(20 * time.Second):
				_ = c.Process.Kill()
				<-s.done[n]
			}
		}
	}
}

// Close stops everything and removes the scratch state.
func (s *System) Close() {
	names := make([]string, 0, len(s.procs))
	for n := range s.procs {
		names = append(names, n)
	}
	s.Stop(names...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if conn, err := pgx.Connect(ctx, s.PG+"/postgres?sslmode=disable"); err == nil {
		for _, db := range append(s.Databases(), s.Tag+"_floor") {
			_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)")
		}
		conn.Close(ctx)
	}
	_ = s.rabbit(ctx, http.MethodDelete, "/api/vhosts/"+s.Tag, "")
	_ = os.RemoveAll(s.Dir)
}

func (s *System) rabbitUser() string {
	if u, err := url.Parse(s.AMQP); err == nil && u.User != nil {
		return u.User.Username()
	}
	return "guest"
}

// rabbit calls the management API.
func (s *System) rabbit(ctx context.Context, method, path, body string) error {
	resp, err := rabbitAPI(ctx, s.RabbitAPI, method, path, body)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// rabbitAPI sends one request to the management API at api (a URL with
// credentials) and fails on a status of 300 or more.
func rabbitAPI(ctx context.Context, api, method, path, body string) (*http.Response, error) {
	u, err := url.Parse(strings.TrimRight(api, "/"))
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("-rabbit-api %q is not a URL", api)
	}
	user := u.User
	u.User = nil
	req, err := http.NewRequestWithContext(ctx, method, u.String()+path, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if user != nil {
		pw, _ := user.Password()
		req.SetBasicAuth(user.Username(), pw)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("RabbitMQ management API (rabbitmq-plugins enable rabbitmq_management): %w", err)
	}
	if resp.StatusCode >= 300 {
		resp.Body.Close()
		return nil, fmt.Errorf("management API: %s %s: %s", method, path, resp.Status)
	}
	return resp, nil
}

func mailpitBinary() (string, error) {
	if p, err := exec.LookPath("mailpit"); err == nil {
		return p, nil
	}
	gopath, err := exec.Command("go", "env", "GOPATH").Output()
	if err == nil {
		p := filepath.Join(strings.TrimSpace(string(gopath)), "bin", "mailpit")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("mailpit is missing; run make deps")
}

// listening waits for the address a service writes to its
// LISTEN_ADDR_FILE once it listens, and returns its port.
func listening(ctx context.Context, path string, timeout time.Duration, exited <-chan struct{}) (int, error) {
	deadline := time.Now().Add(timeout)
	for {
		if b, err := os.ReadFile(path); err == nil {
			_, port, err := net.SplitHostPort(strings.TrimSpace(string(b)))
			if err != nil {
				return 0, fmt.Errorf("%s: %w", path, err)
			}
			return strconv.Atoi(port)
		}
		select {
		case <-exited:
			return 0, errors.New("exited before it listened")
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("not listening after %v", timeout)
		}
	}
}

// freePort is a port nobody listens on right now, for Mailpit (see
// startMailpit).
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitHTTP waits until url answers 200, the process ends (exited) or timeout.
func waitHTTP(ctx context.Context, url string, timeout time.Duration, exited <-chan struct{}) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	for {
		if resp, err := client.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			return errors.New("exited before it was ready")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer 200 within %s", url, timeout)
		}
	}
}
