package web

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/checkout-demo/checkout/internal/testenv"
)

// With LISTEN_ADDR_FILE set, a server on port 0 writes the address it got
// there once it listens, and that is where it answers.
func TestListenAddrFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "addr")
	t.Setenv(testenv.ListenAddrFile, file)
	ctx, cancel := context.WithCancel(context.Background())
	done, exited := make(chan error, 1), make(chan struct{})
	var stopping atomic.Bool
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "here") })
	go func() {
		done <- ListenAndServe(ctx, slog.New(slog.DiscardHandler), "127.0.0.1:0", h, 5*time.Second, &stopping, nil)
		close(exited)
	}()
	port := testenv.Listening(t, file, exited, 10*time.Second)
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "here" {
		t.Fatalf("the address in the file answered %q, want the server's answer", body)
	}
	if _, err := os.Stat(file + ".tmp"); err == nil {
		t.Errorf("%s.tmp is left behind", file)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("ListenAndServe returned %v", err)
	}
}

// A file it cannot write ends the start with the error, instead of a
// server nobody can find.
func TestListenAddrFileUnwritable(t *testing.T) {
	t.Setenv(testenv.ListenAddrFile, filepath.Join(t.TempDir(), "missing", "addr"))
	var stopping atomic.Bool
	err := ListenAndServe(context.Background(), slog.New(slog.DiscardHandler), "127.0.0.1:0", http.NotFoundHandler(), time.Second, &stopping, nil)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ListenAndServe = %v, want the error of writing into a missing folder", err)
	}
}
