package testenv

import (
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The proxies in front of the broker and the database dial where
// TEST_AMQP_URL and TEST_DATABASE_URL point, with the scheme's port when
// the URL names none.
func TestHostOf(t *testing.T) {
	for raw, want := range map[string]string{
		"amqp://guest:guest@rabbit:5673/":             "rabbit:5673",
		"amqp://guest:guest@rabbit/":                  "rabbit:5672",
		"amqps://u:p@broker.example/vh":               "broker.example:5671",
		"postgres://postgres@db/postgres?sslmode=off": "db:5432",
		"postgresql://u@[::1]/x":                      "[::1]:5432",
		"postgres://postgres@localhost:5433/postgres": "localhost:5433",
	} {
		if got := hostOf(raw); got != want {
			t.Errorf("hostOf(%q) = %q, want %q", raw, got, want)
		}
	}
}

// A closed port refuses connections, and nobody else can listen on it
// while the test runs.
func TestClosedPort(t *testing.T) {
	port := ClosedPort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if c, err := net.DialTimeout("tcp", addr, 2*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("dial %s: %v, want connection refused", addr, err)
	}
	if ln, err := net.Listen("tcp", addr); err == nil {
		ln.Close()
		t.Fatalf("another listener got %s", addr)
	}
}

// fatal records a test's Fatalf and ends its goroutine, as testing does.
type fatal struct {
	testing.TB
	msg string
}

func (f *fatal) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// listening runs Listening on a TB that records its failure.
func listening(t *testing.T, file string, exited <-chan struct{}, timeout time.Duration) (int, string) {
	f := &fatal{TB: t}
	port := make(chan int, 1)
	done := make(chan struct{})
	go func() { defer close(done); port <- Listening(f, file, exited, timeout) }()
	<-done
	select {
	case p := <-port:
		return p, ""
	default:
		return 0, f.msg
	}
}

// Listening returns the port a process writes, waits for it to be written,
// and fails when the process ends without writing it or writes nonsense.
func TestListening(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "addr")
	go func() {
		time.Sleep(100 * time.Millisecond)
		_ = os.WriteFile(file, []byte("127.0.0.1:43210"), 0o644)
	}()
	if port, msg := listening(t, file, nil, 10*time.Second); port != 43210 {
		t.Errorf("Listening = %d (%s), want 43210", port, msg)
	}

	exited := make(chan struct{})
	close(exited)
	if port, msg := listening(t, filepath.Join(dir, "never"), exited, 10*time.Second); port != 0 || !strings.Contains(msg, "exited") {
		t.Errorf("Listening for a process that ended = %d %q, want a failure", port, msg)
	}
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("no port"), 0o644); err != nil {
		t.Fatal(err)
	}
	if port, msg := listening(t, bad, nil, 10*time.Second); port != 0 || msg == "" {
		t.Errorf("Listening on %q = %d, want a failure", "no port", port)
	}
}

// A mail sent to Mailpit's SMTP port (a proxy in front of its Unix socket)
// is in its API (the other proxy).
func TestMailpit(t *testing.T) {
	m := StartMailpit(t)
	msg := "To: someone@example.com\r\nSubject: through the proxy\r\n\r\nhello\r\n"
	if err := smtp.SendMail(fmt.Sprintf("127.0.0.1:%d", m.SMTPPort), nil, "shop@example.com", []string{"someone@example.com"}, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	got := m.Messages(t)
	if len(got) != 1 || got[0].Subject != "through the proxy" || len(got[0].To) != 1 || got[0].To[0].Address != "someone@example.com" {
		t.Fatalf("Mailpit holds %+v, want the one mail", got)
	}
	if text := m.Text(t, got[0].ID); !strings.Contains(text, "hello") {
		t.Fatalf("its text is %q", text)
	}
}
