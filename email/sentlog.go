package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
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
// processes may share dir (replicas on one volume): lines are appended
// with O_APPEND, and a process that does not know an id reads what the
// others appended since it last looked, so a message redelivered to a
// sibling after a crash is found too.
type sentLog struct {
	dir string
	ttl time.Duration

	mu      sync.Mutex
	sent    map[string]time.Time
	offsets map[string]int64 // how far each file has been read
	f       *os.File
	hour    string // the hour f is for
}

const sentLogLayout = "2006010215"

// openSentLog loads the records of the last ttl from dir and deletes older
// files. An empty dir keeps the records in memory only.
func openSentLog(dir string, ttl time.Duration, now time.Time) (*sentLog, error) {
	l := &sentLog{dir: dir, ttl: ttl, sent: map[string]time.Time{}, offsets: map[string]int64{}}
	if dir == "" {
		return l, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := l.refresh(now); err != nil {
		return nil, err
	}
	return l, nil
}

// refresh reads what was appended to the files of the last ttl since the
// last look, and deletes the files past it. The caller holds mu (or owns l).
func (l *sentLog) refresh(now time.Time) error {
	entries, err := os.ReadDir(l.dir)
	if err != nil {
		return err
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
		path := filepath.Join(l.dir, name)
		// A file covers [hour, hour+1h): keep it while any of it is young.
		if now.Sub(hour.Add(time.Hour)) > l.ttl {
			_ = os.Remove(path)
			delete(l.offsets, path)
			continue
		}
		if err := l.load(path, hour.Add(time.Hour)); err != nil {
			return err
		}
	}
	return nil
}

// load reads one file's ids from where it was last read to its last full
// line; at is taken as their time (the file's end, so a record lives at
// least ttl).
func (l *sentLog) load(path string, at time.Time) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // another process removed it
	}
	if err != nil {
		return err
	}
	defer f.Close()
	off := l.offsets[path]
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return err
	}
	r := bufio.NewReader(f)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			break // EOF, or a line still being written: read it next time
		}
		off += int64(len(line))
		if id := strings.TrimSpace(line); id != "" {
			l.sent[id] = at
		}
	}
	l.offsets[path] = off
	return nil
}

func (l *sentLog) has(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if at, ok := l.sent[id]; ok {
		return time.Since(at) < l.ttl
	}
	if l.dir == "" {
		return false
	}
	// Perhaps a sibling sent it: read what the others appended. A failure
	// to read counts as not sent (the mail may go out twice, never zero
	// times).
	_ = l.refresh(time.Now())
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
			_ = l.refresh(now) // a new hour: delete the files past the ttl
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
