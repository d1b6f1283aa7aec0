package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Services are the four binaries, in the order they are started.
var Services = []string{"order", "payment", "email", "gateway"}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// Binaries builds the four services once per test binary and returns the
// folder that holds them.
func Binaries(tb testing.TB) string {
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
		for _, s := range Services {
			cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, s), "./"+s)
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("build %s: %v\n%s", s, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return binDir
}

// FreePort returns a TCP port nobody listens on right now.
func FreePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Mailpit is a Mailpit server of the test's own.
type Mailpit struct {
	URL      string // HTTP API, e.g. http://127.0.0.1:41234
	SMTPPort int
}

// MailpitBinary finds the mailpit binary (PATH, then GOPATH/bin).
func MailpitBinary(tb testing.TB) string {
	tb.Helper()
	if p, err := exec.LookPath("mailpit"); err == nil {
		return p
	}
	gopath, _ := exec.Command("go", "env", "GOPATH").Output()
	p := filepath.Join(strings.TrimSpace(string(gopath)), "bin", "mailpit")
	if _, err := os.Stat(p); err != nil {
		unavailable(tb, "Mailpit", fmt.Errorf("mailpit binary not found; make deps installs it"))
	}
	return p
}

// StartMailpit starts Mailpit on free ports, keeping mails in memory, and
// stops it when the test ends.
func StartMailpit(tb testing.TB) Mailpit {
	tb.Helper()
	smtp, web := FreePort(tb), FreePort(tb)
	cmd := exec.Command(MailpitBinary(tb),
		"--smtp", fmt.Sprintf("127.0.0.1:%d", smtp), "--listen", fmt.Sprintf("127.0.0.1:%d", web),
		"--max", "0", "--quiet", "--disable-version-check", "--smtp-auth-accept-any", "--smtp-auth-allow-insecure")
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start mailpit: %v", err)
	}
	tb.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	m := Mailpit{URL: fmt.Sprintf("http://127.0.0.1:%d", web), SMTPPort: smtp}
	WaitHTTP(tb, m.URL+"/api/v1/messages", 30*time.Second)
	return m
}

// MailSummary is what Mailpit's API says of one message.
type MailSummary struct {
	ID        string `json:"ID"`
	MessageID string `json:"MessageID"`
	Subject   string `json:"Subject"`
	Snippet   string `json:"Snippet"`
	To        []struct {
		Address string `json:"Address"`
	} `json:"To"`
}

// Messages lists every message in the inbox.
func (m Mailpit) Messages(tb testing.TB) []MailSummary {
	tb.Helper()
	var all []MailSummary
	for start := 0; ; {
		var page struct {
			Total    int           `json:"total"`
			Messages []MailSummary `json:"messages"`
		}
		getJSON(tb, fmt.Sprintf("%s/api/v1/messages?start=%d&limit=1000", m.URL, start), &page)
		all = append(all, page.Messages...)
		start += len(page.Messages)
		if len(page.Messages) == 0 || start >= page.Total {
			return all
		}
	}
}

// Text returns the plain-text body of a message.
func (m Mailpit) Text(tb testing.TB, id string) string {
	tb.Helper()
	var msg struct{ Text string }
	getJSON(tb, m.URL+"/api/v1/message/"+id, &msg)
	return msg.Text
}

func getJSON(tb testing.TB, url string, v any) {
	tb.Helper()
	resp, err := http.Get(url)
	if err != nil {
		tb.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		tb.Fatalf("decode %s: %v", url, err)
	}
}

// WaitHTTP waits until url answers 200.
func WaitHTTP(tb testing.TB, url string, timeout time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	tb.Fatalf("%s did not answer 200 within %v", url, timeout)
}

// System is the four services running as processes, as `make run` runs
// them, each test with its own databases, vhost and Mailpit.
type System struct {
	tb      testing.TB
	bin     string
	logDir  string
	Mailpit Mailpit
	AMQPURL string
	// OrderDB and PaymentDB are the services' database URLs.
	OrderDB, PaymentDB string
	// Env is added to every service's environment; ServiceEnv to one's.
	Env        map[string]string
	ServiceEnv map[string]map[string]string

	mu    sync.Mutex
	procs map[string]*proc
	ports map[string]int
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
		amqpURL = VHost(tb)
	}
	logDir := tb.TempDir()
	if d := os.Getenv("TEST_LOG_DIR"); d != "" { // keep the logs for a post-mortem
		logDir = filepath.Join(d, strings.ReplaceAll(tb.Name(), "/", "_"))
		if err := os.MkdirAll(logDir, 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	s := &System{
		tb: tb, bin: Binaries(tb), logDir: logDir,
		Mailpit: StartMailpit(tb), AMQPURL: amqpURL,
		OrderDB: Database(tb), PaymentDB: Database(tb),
		Env: map[string]string{}, ServiceEnv: map[string]map[string]string{},
		procs: map[string]*proc{}, ports: map[string]int{},
	}
	tb.Cleanup(s.stopAll)
	return s
}

// StartSystem starts the four services and waits until each is ready.
func StartSystem(tb testing.TB, env map[string]string) *System {
	tb.Helper()
	s := NewSystem(tb, "")
	for k, v := range env {
		s.Env[k] = v
	}
	for _, name := range Services {
		s.Start(name)
	}
	for _, name := range Services {
		s.WaitReady(name, 60*time.Second)
	}
	// Ready is not yet all there: order is ready with its database alone,
	// and its saga consumer may start a moment later. The gateway's
	// aggregated /health says when everything runs.
	WaitHTTP(tb, s.URL("gateway")+"/health", 60*time.Second)
	return s
}

// base strips a replica suffix: "payment-2" runs the payment binary.
func base(name string) string {
	b, _, _ := strings.Cut(name, "-")
	return b
}

// Port returns the port of a service (chosen on first start, kept across restarts).
func (s *System) Port(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.ports[name]; !ok {
		s.ports[name] = FreePort(s.tb)
	}
	return s.ports[name]
}

// URL of a service, e.g. s.URL("gateway").
func (s *System) URL(name string) string { return fmt.Sprintf("http://127.0.0.1:%d", s.Port(name)) }

func (s *System) env(name string) []string {
	env := map[string]string{
		"PORT":      fmt.Sprint(s.Port(name)),
		"AMQP_URL":  s.AMQPURL,
		"LOG_LEVEL": "info",
		// Small pools: many systems run at once against one PostgreSQL.
		"DB_MAX_CONNS":          "4",
		"ORDER_SERVICE_URL":     s.URL("order"),
		"PAYMENT_SERVICE_URL":   s.URL("payment"),
		"EMAIL_SERVICE_URL":     s.URL("email"),
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
	for k, v := range s.Env {
		env[k] = v
	}
	for k, v := range s.ServiceEnv[base(name)] {
		env[k] = v
	}
	for k, v := range s.ServiceEnv[name] {
		env[k] = v
	}
	out := []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

// Start starts a service (or a replica such as "payment-2"); its output is
// appended to a log file shown when the test fails.
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
	s.mu.Unlock()
	logf, err := os.OpenFile(filepath.Join(s.logDir, name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		s.tb.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(s.bin, base(name)))
	cmd.Env = s.env(name)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		s.tb.Fatalf("start %s: %v", name, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.done) }()
	s.mu.Lock()
	s.procs[name] = p
	s.mu.Unlock()
}

// WaitReady waits until the service's /readyz answers 200.
func (s *System) WaitReady(name string, timeout time.Duration) {
	s.tb.Helper()
	WaitHTTP(s.tb, s.URL(name)+"/readyz", timeout)
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

// Logs returns a service's log so far.
func (s *System) Logs(name string) string {
	b, _ := os.ReadFile(filepath.Join(s.logDir, name+".log"))
	return string(b)
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

// Run starts a service in-process through its run function, as its main
// does, listening on port 0; it returns the service's base URL and, when the
// test ends, cancels run's context and fails the test unless run returns nil
// within 20 s.
func Run(tb testing.TB, run func(ctx context.Context, listening func(net.Addr)) error) string {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, func(a net.Addr) { addr <- a }) }()
	var base string
	select {
	case a := <-addr:
		base = fmt.Sprintf("http://127.0.0.1:%d", a.(*net.TCPAddr).Port)
	case err := <-done:
		cancel()
		tb.Fatalf("run: %v", err)
	}
	tb.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("run returned %v", err)
			}
		case <-time.After(20 * time.Second):
			tb.Error("run did not return within 20s of shutdown")
		}
	})
	return base
}
