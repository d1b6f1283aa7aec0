package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"

	"github.com/checkout-demo/checkout/internal/web"
)

// authenticator verifies customers' JWTs (the optional signed-in mode,
// AUTH_JWT_*): an HS256 secret or the keys of a JWKS URL, the issuer and
// audience when set, and an expiry always. The subject is the customer's
// user id.
type authenticator struct {
	keyfunc jwt.Keyfunc
	parser  *jwt.Parser
}

// minSecret is the shortest HS256 secret taken (RFC 7518 §3.2: a key as
// long as the hash).
const minSecret = 32

// newAuthenticator returns nil when no JWT settings are given.
func newAuthenticator(ctx context.Context, cfg Config) (*authenticator, error) {
	opts := []jwt.ParserOption{jwt.WithExpirationRequired(), jwt.WithLeeway(30 * time.Second)}
	if cfg.JWTIssuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.JWTIssuer))
	}
	if cfg.JWTAudience != "" {
		opts = append(opts, jwt.WithAudience(cfg.JWTAudience))
	}
	switch {
	case cfg.JWTSecret != "" && cfg.JWKSURL != "":
		return nil, errors.New("set AUTH_JWT_HS256_SECRET or AUTH_JWT_JWKS_URL, not both")
	case cfg.JWTSecret != "":
		if len(cfg.JWTSecret) < minSecret {
			return nil, fmt.Errorf("AUTH_JWT_HS256_SECRET must be at least %d bytes", minSecret)
		}
		key := []byte(cfg.JWTSecret)
		return &authenticator{
			keyfunc: func(*jwt.Token) (any, error) { return key, nil },
			parser:  jwt.NewParser(append(opts, jwt.WithValidMethods([]string{"HS256"}))...),
		}, nil
	case cfg.JWKSURL != "":
		// keyfunc fetches the set now and refreshes it in the background
		// (and when a token names an unknown key id) until ctx ends.
		k, err := keyfunc.NewDefaultCtx(ctx, []string{cfg.JWKSURL})
		if err != nil {
			return nil, fmt.Errorf("JWKS %s: %w", cfg.JWKSURL, err)
		}
		return &authenticator{
			keyfunc: k.Keyfunc,
			parser: jwt.NewParser(append(opts, jwt.WithValidMethods([]string{
				"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}))...),
		}, nil
	}
	return nil, nil
}

// subject verifies token and returns its subject, which must be a positive
// integer (the shop's user ids).
func (a *authenticator) subject(token string) (int64, error) {
	t, err := a.parser.Parse(token, a.keyfunc)
	if err != nil {
		return 0, err
	}
	sub, err := t.Claims.GetSubject()
	if err != nil {
		return 0, err
	}
	id, err := strconv.ParseInt(sub, 10, 64)
	if err != nil || id <= 0 {
		return 0, errors.New("the token's subject is not a user id")
	}
	return id, nil
}

// bearer returns the Authorization header's Bearer credential.
func bearer(r *http.Request) string {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

// looksLikeJWT tells a JWT (three dot-separated parts) from an order's
// access token (base64url, no dots).
func looksLikeJWT(tok string) bool { return strings.Count(tok, ".") == 2 }

// guard runs first on every API request. It drops a client's own
// web.UserHeader; verifies a JWT and, when it is valid, replaces the
// Authorization header by the customer's user id in web.UserHeader for the
// order service; limits the requests of each client (the signed-in
// customer, or the address) with 429 and Retry-After; and refuses an
// invalid JWT with 401. An order's access token passes through untouched.
func guard(log *slog.Logger, cfg Config, auth *authenticator, lim *limiter) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r.Header.Del(web.UserHeader)
			var (
				user    int64
				authErr error
			)
			if tok := bearer(r); auth != nil && looksLikeJWT(tok) {
				if user, authErr = auth.subject(tok); authErr == nil {
					r.Header.Del("Authorization")
					r.Header.Set(web.UserHeader, strconv.FormatInt(user, 10))
				}
			}
			if lim != nil {
				key := "ip:" + clientIP(r, cfg.ClientIPHeader)
				if user != 0 {
					key = "user:" + strconv.FormatInt(user, 10)
				}
				if ok, wait := lim.allow(key, time.Now()); !ok {
					w.Header().Set("Retry-After", retryAfter(wait))
					web.WriteProblem(w, r, http.StatusTooManyRequests, "too many requests; retry after the time in Retry-After")
					return
				}
			}
			if authErr != nil {
				log.Info("token refused", "err", authErr, "request_id", web.RequestID(r.Context()))
				w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
				web.WriteProblem(w, r, http.StatusUnauthorized, "the bearer token is not valid")
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// requireCredential answers 401 before asking the order service when the
// request has neither a bearer token nor a signed-in customer.
func requireCredential(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if bearer(r) == "" && r.Header.Get(web.UserHeader) == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="orders"`)
			web.WriteProblem(w, r, http.StatusUnauthorized,
				"send the order's access_token (from the checkout answer) or your sign-in token as Authorization: Bearer <token>")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// handleListOrders lists the signed-in customer's orders.
func handleListOrders(log *slog.Logger, orders *orderClient) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(web.UserHeader) == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="orders"`)
			web.WriteProblem(w, r, http.StatusUnauthorized, "listing orders needs a sign-in token: Authorization: Bearer <JWT>")
			return
		}
		forward(w, r, log, orders, http.MethodGet, orders.cfg.OrderServiceURL+"/orders", nil, upstreamHeader(r))
	})
}

// tokenCommand is `gateway token -sub 42 [-ttl 1h]`: it prints a JWT for
// development, signed with AUTH_JWT_HS256_SECRET and carrying the
// configured issuer and audience.
func tokenCommand(cfg Config, stdout io.Writer) func(context.Context, []string) error {
	return func(_ context.Context, args []string) error {
		fs := flag.NewFlagSet("token", flag.ContinueOnError)
		sub := fs.Int64("sub", 0, "the customer's user id (the token's subject)")
		ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
		if err := fs.Parse(args); err != nil {
			return err
		}
		if *sub <= 0 {
			return errors.New("-sub must be a positive user id")
		}
		tok, err := mintToken(cfg, *sub, *ttl, time.Now())
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(stdout, tok)
		return err
	}
}

func mintToken(cfg Config, sub int64, ttl time.Duration, now time.Time) (string, error) {
	if len(cfg.JWTSecret) < minSecret {
		return "", fmt.Errorf("AUTH_JWT_HS256_SECRET must be set (at least %d bytes) to mint tokens", minSecret)
	}
	claims := jwt.RegisteredClaims{
		Subject:   strconv.FormatInt(sub, 10),
		Issuer:    cfg.JWTIssuer,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}
	if cfg.JWTAudience != "" {
		claims.Audience = jwt.ClaimStrings{cfg.JWTAudience}
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(cfg.JWTSecret))
}
