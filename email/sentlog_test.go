package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func TestSentLog(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()

	// Two processes sharing the directory, appending concurrently.
	a, err := openSentLog(dir, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	b, err := openSentLog(dir, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			l := a
			if i%2 == 1 {
				l = b
			}
			if err := l.add(fmt.Sprintf("event-%03d", i)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if !a.has("event-000") || a.has("event-001") {
		t.Fatal("a process knows only its own records until it restarts")
	}
	a.Close()
	b.Close()

	// An hour-old file that is past the ttl is deleted, not loaded.
	old := filepath.Join(dir, "sent-"+now.Add(-3*time.Hour).UTC().Format(sentLogLayout)+".log")
	if err := os.WriteFile(old, []byte("event-old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := openSentLog(dir, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 200 {
		if id := fmt.Sprintf("event-%03d", i); !c.has(id) {
			t.Fatalf("%s not loaded after a restart", id)
		}
	}
	if c.has("event-old") {
		t.Fatal("a record past the ttl was loaded")
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Fatalf("the expired file is still there: %v", err)
	}

	// Without a directory the records live in memory only.
	m, err := openSentLog("", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.add("x"); err != nil || !m.has("x") || m.has("y") {
		t.Fatal("in-memory sent log")
	}
}
