package main

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// sentLog remembers which payment events this service already mailed, so a
// message redelivered after a crash (sent, but the ack never reached the
// broker) is announced again without a second mail.
//
// Each record is one line (the event id) appended to an hourly file in dir
// with a single write, right after the SMTP server accepted the mail. A
// write survives the process being killed (the kernel holds it), so the
// window for a duplicate shrinks from "SMTP accept to ack" (a confirm round
// trip, much longer while a backlog drains) to the moments between the
// server's 250 and that write. The records do not survive the machine or a
// fresh container: the file lives where the container keeps it across
// restarts (/tmp in the image; an emptyDir in Kubernetes). Several
// processes may share dir: lines are appended with O_APPEND, and every
// process reads the others' records when it starts.
type sentLog struct {
	dir string
	ttl time.Duration

	mu   sync.Mutex
	sent map[string]time.Time
	f    *os.File
	hour string // the hour f is for
}

const sentLogLayout = "2006010215"

// openSentLog loads the records of the last ttl from dir and deletes older
// files. An empty dir keeps the records in memory only.
func openSentLog(dir string, ttl time.Duration, now time.Time) (*sentLog, error) {
	l := &sentLog{dir: dir, ttl: ttl, sent: map[string]time.Time{}}
	if dir == "" {
		return l, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		name := e.Name()
		stamp, ok := strings.CutPrefix(name, "sent-")
		stamp, ok2 := strings.CutSuffix(stamp, ".log")
		if !ok || !ok2 {
			continue
		}
		hour, err := time.ParseInLocation(sentLogLayout, stamp, time.UTC)
		if err != nil {
			continue
		}
		path := filepath.Join(dir, name)
		// A file covers [hour, hour+1h): keep it while any of it is young.
		if now.Sub(hour.Add(time.Hour)) > ttl {
			_ = os.Remove(path)
			continue
		}
		if err := l.load(path, hour.Add(time.Hour)); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// load reads one file's ids; at is taken as their time (the file's end, so
// a record lives at least ttl).
func (l *sentLog) load(path string, at time.Time) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // another process removed it
	}
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if id := strings.TrimSpace(sc.Text()); id != "" {
			l.sent[id] = at
		}
	}
	return sc.Err()
}

func (l *sentLog) has(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	at, ok := l.sent[id]
	return ok && time.Since(at) < l.ttl
}

// add records id. The in-memory record is made even when the file write
// fails; the error says the record would not survive a crash.
func (l *sentLog) add(id string) error {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sent[id] = now
	if len(l.sent) > 100_000 && len(l.sent)%10_000 == 0 {
		for k, at := range l.sent {
			if now.Sub(at) > l.ttl {
				delete(l.sent, k)
			}
		}
	}
	if l.dir == "" {
		return nil
	}
	if hour := now.UTC().Format(sentLogLayout); hour != l.hour || l.f == nil {
		if l.f != nil {
			_ = l.f.Close()
			l.f = nil
		}
		f, err := os.OpenFile(filepath.Join(l.dir, "sent-"+hour+".log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("sent log: %w", err)
		}
		l.f, l.hour = f, hour
	}
	if _, err := l.f.WriteString(id + "\n"); err != nil {
		return fmt.Errorf("sent log: %w", err)
	}
	return nil
}

func (l *sentLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
