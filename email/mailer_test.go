package main

import (
	"bufio"
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

// smtpServer speaks just enough SMTP for one mail and then misbehaves the
// way a real server can: drop the connection after it accepted the mail
// (dropAfterAccept) or before it answers the DATA. Mailpit cannot be made
// to do either on cue.
func smtpServer(t *testing.T, dropAfterAccept bool) int {
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
			go serveSMTP(conn, dropAfterAccept)
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

func serveSMTP(conn net.Conn, dropAfterAccept bool) {
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
