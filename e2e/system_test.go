package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/checkout-demo/checkout/internal/testenv"
)

// services are the four binaries, in the order they are started: the
// gateway last, as it is given the others' addresses.
var services = []string{"order", "payment", "email", "gateway"}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds the four services once per test binary and returns the
// folder that holds them.
func binaries(tb testing.TB) string {
	tb.Helper()
	buildOnce.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			buildErr = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		root := filepath.Dir(strings.TrimSpace(string(out)))
		binDir, buildErr = os.MkdirTemp("", "checkout-bin-")
		if buildErr != nil {
			return
		}
		// One build of the four: they share its work and link at once.
		args := []string{"build", "-o", binDir + string(filepath.Separator)}
		for _, s := range services {
			args = append(args, "./"+s)
		}
		cmd := exec.Command("go", args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return binDir
}

// System is the four services running as processes, as `make run` runs
// them, each test with its own databases, vhost and Mailpit.
//
// A service listens on a port of the kernel's choosing (PORT=0) and
// reports it through LISTEN_ADDR_FILE; a restart asks for the same port
// again, so that the gateway, given the others' addresses when it starts,
// and the test's clients find the service where it was.
type System struct {
	tb      testing.TB
	bin     string
	logDir  string
	Mailpit testenv.Mailpit
	AMQPURL string
	// OrderDB and PaymentDB are the services' database URLs.
	OrderDB, PaymentDB string
	// Env is added to every service's environment; ServiceEnv to one's.
	Env        map[string]string
	ServiceEnv map[string]map[string]string

	mu    sync.Mutex
	procs map[string]*proc
	ports map[string]int // as each service reported at its first start
}

type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// NewSystem prepares (but does not start) a system. amqpURL may point
// through a Proxy; empty means a fresh vhost.
func NewSystem(tb testing.TB, amqpURL string) *System {
	tb.Helper()
	if amqpURL == "" {
		amqpURL = testenv.VHost(tb)
	}
	logDir := tb.TempDir()
	if d := os.Getenv("TEST_LOG_DIR"); d != "" { // keep the logs for a post-mortem
		logDir = filepath.Join(d, strings.ReplaceAll(tb.Name(), "/", "_"))
		if err := os.MkdirAll(logDir, 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	s := &System{
		tb: tb, bin: binaries(tb), logDir: logDir,
		Mailpit: testenv.StartMailpit(tb), AMQPURL: amqpURL,
		OrderDB: testenv.Database(tb), PaymentDB: testenv.Database(tb),
		Env: map[string]string{}, ServiceEnv: map[string]map[string]string{},
		procs: map[string]*proc{}, ports: map[string]int{},
	}
	tb.Cleanup(s.stopAll)
	return s
}

// fastSystem is NewSystem with the fast delays.
func fastSystem(tb testing.TB, amqpURL string) *System {
	tb.Helper()
	s := NewSystem(tb, amqpURL)
	maps.Copy(s.Env, fast)
	return s
}

// StartSystem starts the four services with env added to their
// environment and waits until the system is healthy.
func StartSystem(tb testing.TB, env map[string]string) *System {
	tb.Helper()
	s := NewSystem(tb, "")
	maps.Copy(s.Env, env)
	s.StartAll()
	return s
}

// StartAll starts the four services and waits until the system is healthy.
func (s *System) StartAll() {
	s.tb.Helper()
	s.Up()
	// Ready is not yet all there: order is ready with its database alone,
	// and its saga consumer may start a moment later. The gateway's
	// aggregated /health says when everything runs.
	testenv.WaitHTTP(s.tb, s.URL("gateway")+"/health", 60*time.Second)
}

// Up starts the named services (the four when none is named) in that
// order and waits until each is ready.
func (s *System) Up(names ...string) {
	s.tb.Helper()
	if len(names) == 0 {
		names = services
	}
	for _, name := range names {
		s.Start(name)
	}
	for _, name := range names {
		s.WaitReady(name, 60*time.Second)
	}
}

// base strips a replica suffix: "payment-2" runs the payment binary.
func base(name string) string {
	b, _, _ := strings.Cut(name, "-")
	return b
}

// URL of a service, e.g. s.URL("gateway"): known once it has started, and
// the same across its restarts.
func (s *System) URL(name string) string {
	s.mu.Lock()
	port, ok := s.ports[name]
	s.mu.Unlock()
	if !ok {
		s.tb.Fatalf("%s has not been started: its address is not known yet", name)
	}
	return fmt.Sprintf("http://127.0.0.1:%d", port)
}

func (s *System) env(name string, port int, addrFile string) []string {
	env := map[string]string{
		"PORT":                 strconv.Itoa(port),
		testenv.ListenAddrFile: addrFile,
		"AMQP_URL":             s.AMQPURL,
		"LOG_LEVEL":            "info",
		// Small pools: many systems run at once against one PostgreSQL.
		"DB_MAX_CONNS":          "4",
		"SMTP_HOST":             "127.0.0.1",
		"SMTP_PORT":             fmt.Sprint(s.Mailpit.SMTPPort),
		"OUTBOX_POLL_INTERVAL":  "500ms",
		"SHUTDOWN_TIMEOUT":      "10s",
		"CONSUMER_RETRY_BASE":   "200ms",
		"CONSUMER_RETRY_MAX":    "2s",
		"CONSUMER_MAX_ATTEMPTS": "5",
		// The email service's record of sent mails: one per system, as one
		// container's disk (kept across the system's restarts).
		"EMAIL_SENT_DIR": filepath.Join(s.logDir, "email-sent"),
		// The tests drive the gateway from one address far above a person's
		// rate; the limiter has its own test (gateway/TestRateLimit).
		"RATE_LIMIT_RPS": "0",
	}
	switch base(name) {
	case "order":
		env["DATABASE_URL"] = s.OrderDB
	case "payment":
		env["DATABASE_URL"] = s.PaymentDB
	}
	set := maps.Clone(s.Env)
	maps.Copy(set, s.ServiceEnv[base(name)])
	maps.Copy(set, s.ServiceEnv[name])
	if base(name) == "gateway" {
		for _, up := range []string{"order", "payment", "email"} {
			k := strings.ToUpper(up) + "_SERVICE_URL"
			if _, ok := set[k]; !ok {
				env[k] = s.URL(up)
			}
		}
	}
	maps.Copy(env, set)
	out := []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

// Start starts a service (or a replica such as "payment-2") and waits until
// it listens; its output is appended to a log file shown when the test
// fails. A service started before is started on its port of then.
func (s *System) Start(name string) {
	s.tb.Helper()
	s.mu.Lock()
	if p, ok := s.procs[name]; ok {
		select {
		case <-p.done:
		default:
			s.mu.Unlock()
			s.tb.Fatalf("%s is already running", name)
		}
	}
	port := s.ports[name] // 0 the first time: any free port
	s.mu.Unlock()
	logf, err := os.OpenFile(filepath.Join(s.logDir, name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		s.tb.Fatal(err)
	}
	addrFile := filepath.Join(s.logDir, name+".addr")
	if err := os.Remove(addrFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.tb.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(s.bin, base(name)))
	cmd.Env = s.env(name, port, addrFile)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		s.tb.Fatalf("start %s: %v", name, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.done) }()
	s.mu.Lock()
	s.procs[name] = p
	s.mu.Unlock()
	got := testenv.Listening(s.tb, addrFile, p.done, 60*time.Second)
	s.mu.Lock()
	s.ports[name] = got
	s.mu.Unlock()
}

// WaitReady waits until the service's /readyz answers 200.
func (s *System) WaitReady(name string, timeout time.Duration) {
	s.tb.Helper()
	testenv.WaitHTTP(s.tb, s.URL(name)+"/readyz", timeout)
}

// Signal sends sig to a running service and returns at once (SIGSTOP and
// SIGCONT freeze and thaw it).
func (s *System) Signal(name string, sig syscall.Signal) {
	s.mu.Lock()
	p := s.procs[name]
	s.mu.Unlock()
	if p != nil {
		_ = p.cmd.Process.Signal(sig)
	}
}

// Kill sends SIGKILL to a service and waits for it to die.
func (s *System) Kill(name string) { s.signal(name, syscall.SIGKILL, 5*time.Second) }

// Stop sends SIGTERM and waits for a graceful exit; it fails the test if the
// service does not exit within timeout.
func (s *System) Stop(name string, timeout time.Duration) {
	s.tb.Helper()
	if !s.signal(name, syscall.SIGTERM, timeout) {
		s.tb.Errorf("%s did not exit within %v of SIGTERM", name, timeout)
		s.Kill(name)
	}
}

// ExitCode is the exit code of a stopped service, -1 while it runs or when
// a signal ended it.
func (s *System) ExitCode(name string) int {
	s.mu.Lock()
	p := s.procs[name]
	s.mu.Unlock()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	default:
		return -1
	}
}

func (s *System) signal(name string, sig syscall.Signal, timeout time.Duration) bool {
	s.mu.Lock()
	p := s.procs[name]
	s.mu.Unlock()
	if p == nil {
		return true
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

func (s *System) stopAll() {
	s.mu.Lock()
	names := make([]string, 0, len(s.procs))
	for n := range s.procs {
		names = append(names, n)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, n := range names {
		wg.Go(func() {
			if !s.signal(n, syscall.SIGTERM, 20*time.Second) {
				s.signal(n, syscall.SIGKILL, 5*time.Second)
			}
		})
	}
	wg.Wait()
	if s.tb.Failed() {
		for _, n := range names {
			b, _ := os.ReadFile(filepath.Join(s.logDir, n+".log"))
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			s.tb.Logf("---- %s log (tail) ----\n%s", n, bytes.TrimSpace(b))
		}
	}
}

// Checkout posts a checkout to the gateway and returns the status and body.
func (s *System) Checkout(ctx context.Context, body string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL("gateway")+"/api/checkout", strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, err = buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.Bytes(), err
}
