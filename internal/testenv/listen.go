package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ListenAddrFile is the variable that names the file a service writes the
// address it listens on to (web.ListenAndServe): started with PORT=0 and
// ListenAddrFile set, a service's port is one nobody else can have taken.
const ListenAddrFile = "LISTEN_ADDR_FILE"

// Listening waits until a process started with ListenAddrFile=file writes
// its address there, and returns its port. It fails the test when the
// process ends first (exited is closed) or timeout passes.
func Listening(tb testing.TB, file string, exited <-chan struct{}, timeout time.Duration) int {
	tb.Helper()
	deadline := time.After(timeout)
	for ended := false; ; {
		if b, err := os.ReadFile(file); err == nil {
			_, port, err := net.SplitHostPort(string(b))
			p, perr := strconv.Atoi(port)
			if err != nil || perr != nil {
				tb.Fatalf("%s holds %q, not a host:port", file, b)
			}
			return p
		}
		if ended {
			tb.Fatalf("the process exited before it listened (it wrote no %s); see its log", file)
		}
		select {
		case <-exited:
			ended = true // it may have written the file before it ended: look once more
		case <-deadline:
			tb.Fatalf("the process did not write %s within %v", file, timeout)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// ClosedPort returns a port of 127.0.0.1 that refuses connections until the
// test ends: it is bound but never listened on, so nobody else can take it,
// unlike a port that was free a moment ago. It stands for a dependency that
// is down.
func ClosedPort(tb testing.TB) int {
	tb.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		tb.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		tb.Fatal(err)
	}
	return sa.(*syscall.SockaddrInet4).Port
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

// Send makes one request with a JSON Content-Type and the headers given,
// and returns the answer with its body read.
func Send(tb testing.TB, method, url string, headers map[string]string, body string) (*http.Response, []byte) {
	tb.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// GetJSON decodes into v the answer to a GET of url with the headers
// given, and fails the test unless it is 200.
func GetJSON(tb testing.TB, url string, headers map[string]string, v any) {
	tb.Helper()
	resp, b := Send(tb, http.MethodGet, url, headers, "")
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("GET %s: %s %s", url, resp.Status, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		tb.Fatalf("decode %s: %v", url, err)
	}
}

// SyncBuffer collects the output of a process or a service; it is safe
// for concurrent writes and reads.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
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
