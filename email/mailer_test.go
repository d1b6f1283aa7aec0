package main

import (
	"bufio"
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// smtpServer speaks just enough SMTP for one mail and then misbehaves the
// way a real server can: drop the connection after it accepted the mail
// (dropAfterAccept) or before it answers the DATA. Mailpit cannot be made
// to do either on cue.
func smtpServer(t *testing.T, dropAfterAccept bool) int {
	return slowSMTPServer(t, dropAfterAccept, 0, nil)
}

// slowSMTPServer is smtpServer taking finalDelay to answer the end of the
// data, counting the mails it accepted in accepted (when not nil).
func slowSMTPServer(t *testing.T, dropAfterAccept bool, finalDelay time.Duration, accepted *atomic.Int64) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go serveSMTP(conn, dropAfterAccept, finalDelay, accepted)
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

func serveSMTP(conn net.Conn, dropAfterAccept bool, finalDelay time.Duration, accepted *atomic.Int64) {
	defer conn.Close()
	r := bufio.NewReader(conn)
	say := func(s string) { _, _ = conn.Write([]byte(s + "\r\n")) }
	say("220 test ESMTP")
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimSpace(line))
		switch {
		case strings.HasPrefix(cmd, "EHLO"):
			say("250-test")
			say("250 8BITMIME")
		case strings.HasPrefix(cmd, "DATA"):
			say("354 go ahead")
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
			}
			if !dropAfterAccept {
				return // the mail was never accepted
			}
			time.Sleep(finalDelay)
			if accepted != nil {
				accepted.Add(1)
			}
			say("250 queued")
		case strings.HasPrefix(cmd, "RSET"), strings.HasPrefix(cmd, "QUIT"):
			return // accepted, then gone: RSET and QUIT get no answer
		default:
			say("250 ok")
		}
	}
}

func testMailer(t *testing.T, port int) *Mailer {
	t.Helper()
	m, err := NewMailer(Config{SMTPHost: "127.0.0.1", SMTPPort: port, SMTPTimeout: 2 * time.Second, EmailFrom: "Shop <shop@shop.test>", AcceptConcurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestSendAcceptedThenDropped(t *testing.T) {
	m := testMailer(t, smtpServer(t, true))
	accepted := false
	err := m.Send(context.Background(), Mail{OrderID: 1, Kind: "confirmation", To: "a@b.test", Subject: "s", Text: "t", HTML: "<p>h</p>", MessageID: "x@shop.test"},
		func() { accepted = true })
	if err != nil || !accepted {
		t.Fatalf("Send = %v, accepted %v: the server took the mail, so it counts as sent and must not be sent again", err, accepted)
	}
}

func TestSendDroppedBeforeAccept(t *testing.T) {
	m := testMailer(t, smtpServer(t, false))
	accepted := false
	err := m.Send(context.Background(), Mail{OrderID: 1, Kind: "confirmation", To: "a@b.test", Subject: "s", Text: "t", HTML: "<p>h</p>", MessageID: "x@shop.test"},
		func() { accepted = true })
	if err == nil || accepted {
		t.Fatalf("Send = %v, accepted %v: the server never accepted the mail", err, accepted)
	}
}

// Mails queue for their turn at the final step; the wait must not use up
// the time the server has to answer it. 30 mails against a server that
// takes 100 ms for each end of data, with a 1 s SMTP timeout: all of them
// are sent, and each one the server accepted was reported as accepted.
func TestSendQueuedForTheFinalStep(t *testing.T) {
	var accepted atomic.Int64
	port := slowSMTPServer(t, true, 100*time.Millisecond, &accepted)
	m, err := NewMailer(Config{SMTPHost: "127.0.0.1", SMTPPort: port, SMTPTimeout: time.Second, EmailFrom: "Shop <shop@shop.test>", AcceptConcurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg       sync.WaitGroup
		reported atomic.Int64
		failed   atomic.Int64
	)
	for i := range 30 {
		wg.Go(func() {
			err := m.Send(context.Background(), Mail{OrderID: int64(i), Kind: "confirmation", To: "a@b.test", Subject: "s", Text: "t", HTML: "<p>h</p>", MessageID: "x@shop.test"},
				func() { reported.Add(1) })
			if err != nil {
				failed.Add(1)
				t.Log(err)
			}
		})
	}
	wg.Wait()
	if failed.Load() != 0 || reported.Load() != 30 || accepted.Load() != 30 {
		t.Fatalf("%d failed, %d reported accepted, server accepted %d; want 0, 30, 30", failed.Load(), reported.Load(), accepted.Load())
	}
}
