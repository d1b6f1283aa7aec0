package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/money"
	"github.com/checkout-demo/checkout/internal/web"
)

// Order statuses. An order only moves forward: pending → paid, or
// pending → payment_failed (the saga's compensation: the order is
// cancelled), or pending → cancelled when no payment result came after the
// saga's re-asks (a charge that arrives later is refunded).
const (
	StatusPending       = "pending"
	StatusPaid          = "paid"
	StatusPaymentFailed = "payment_failed"
	StatusCancelled     = "cancelled"
)

// Timeline steps.
const (
	StepCreated           = "created"
	StepPaid              = "paid"
	StepPaymentFailed     = "payment_failed"
	StepCancelled         = "cancelled"
	StepRefunded          = "refunded"
	StepConfirmationSent  = "confirmation_sent"
	StepFailureNoticeSent = "payment_failed_notice_sent"
	StepCancelNoticeSent  = "cancellation_notice_sent"
	// The mail of that kind could not be delivered (EmailFailed).
	StepConfirmationUndelivered  = "confirmation_not_delivered"
	StepFailureNoticeUndelivered = "payment_failed_notice_not_delivered"
	StepCancelNoticeUndelivered  = "cancellation_notice_not_delivered"
	// The saga gave up waiting for the mail step after its re-asks.
	StepNoticeUnconfirmed = "notice_unconfirmed"
)

// StepAskedAgain is the timeline step of the saga's n-th re-ask (from 1)
// of a pending order: its OrderCreated was published again because no
// payment result came.
func StepAskedAgain(n int) string { return fmt.Sprintf("payment_asked_again_%d", n) }

// StepNoticeAskedAgain is the step of the n-th re-ask of an ended order
// whose mail step did not come.
func StepNoticeAskedAgain(n int) string { return fmt.Sprintf("notice_asked_again_%d", n) }

// Limits on a checkout request.
const (
	MaxItems    = 100
	MaxQuantity = 10_000
	MaxBodySize = 1 << 20
)

// Item is one line of an order.
type Item = events.Item

// Step is one entry of an order's timeline.
type Step struct {
	Step string    `json:"step"`
	At   time.Time `json:"at"`
}

// Order is what the API returns.
type Order struct {
	ID                   int64        `json:"id"`
	UserID               int64        `json:"user_id"`
	UserEmail            string       `json:"user_email"`
	Status               string       `json:"status"`
	TotalAmount          money.Amount `json:"total_amount"`
	Items                []Item       `json:"items"`
	ProcessingDurationMS *float64     `json:"processing_duration_ms,omitempty"`
	CreatedAt            time.Time    `json:"created_at"`
	UpdatedAt            time.Time    `json:"updated_at"`
	CancelReason         string       `json:"cancel_reason,omitempty"`
	Timeline             []Step       `json:"timeline,omitempty"`
	// TraceID is the trace the checkout began (empty when it was not
	// traced): /traces/{trace_id} on the gateway, or Jaeger, shows it.
	TraceID string `json:"trace_id,omitempty"`
	// AccessToken opens the order (GET with Authorization: Bearer); it is
	// in the checkout answer only.
	AccessToken string `json:"access_token,omitempty"`
}

// NewOrder is a validated checkout request; the total is computed here from
// the items and never taken from the client.
type NewOrder struct {
	UserID    int64
	UserEmail string
	Items     []Item
	Total     money.Amount
	// Owner is the signed-in customer placing the order (the JWT subject);
	// 0 for a guest checkout.
	Owner int64
}

// Hash fingerprints the request, so that a reused Idempotency-Key with a
// different request is refused.
func (n NewOrder) Hash() string {
	h := sha256.New()
	fmt.Fprintf(h, "%d|%s|", n.UserID, n.UserEmail)
	if n.Owner != 0 {
		// A guest's replay of a key must not open a signed-in order.
		fmt.Fprintf(h, "owner=%d|", n.Owner)
	}
	for _, it := range n.Items {
		fmt.Fprintf(h, "%d:%d:%d|", it.ProductID, it.Quantity, it.Price)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// IdempotencyKeyHeader lets a client retry a checkout safely.
const IdempotencyKeyHeader = "Idempotency-Key"

// validKey accepts 1 to 255 printable ASCII characters.
func validKey(k string) bool {
	if len(k) == 0 || len(k) > 255 {
		return false
	}
	for _, c := range k {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// createRequest is the checkout body. Fields are pointers or raw JSON so that
// a missing field can be told from a zero one and every problem named.
type createRequest struct {
	UserID    *int64        `json:"user_id"`
	UserEmail *string       `json:"user_email"`
	Items     []itemRequest `json:"items"`
}

type itemRequest struct {
	ProductID *int64          `json:"product_id"`
	Quantity  *int64          `json:"quantity"`
	Price     json.RawMessage `json:"price"`
}

// ValidationError lists the problems of a request; it maps to 422.
type ValidationError struct{ Fields []web.FieldError }

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		parts[i] = f.Field + ": " + f.Message
	}
	return "invalid request: " + strings.Join(parts, "; ")
}

// SyntaxError is a body that is not the JSON we expect; it maps to 400.
type SyntaxError struct {
	Detail string
	Field  string
}

func (e *SyntaxError) Error() string { return e.Detail }

// ErrBodyTooLarge maps to 413.
var ErrBodyTooLarge = errors.New("request body exceeds 1 MiB")

// DecodeNewOrder reads and validates a guest's checkout body.
func DecodeNewOrder(r io.Reader) (NewOrder, error) { return decodeNewOrder(r, 0) }

// decodeNewOrder reads and validates a checkout body. owner is the
// signed-in customer (0 for a guest): the order is theirs, the body's
// user_id may be left out, and one naming someone else is ErrUserMismatch.
func decodeNewOrder(r io.Reader, owner int64) (NewOrder, error) {
	body, err := io.ReadAll(io.LimitReader(r, MaxBodySize+1))
	if err != nil {
		return NewOrder{}, &SyntaxError{Detail: "could not read the request body"}
	}
	if len(body) > MaxBodySize {
		return NewOrder{}, ErrBodyTooLarge
	}
	if err := checkStrictJSON(body); err != nil {
		return NewOrder{}, err
	}
	var req createRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&req); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return NewOrder{}, &SyntaxError{
				Detail: fmt.Sprintf("%s must be a JSON %s", typeErr.Field, expectedType(typeErr)),
				Field:  typeErr.Field,
			}
		}
		return NewOrder{}, &SyntaxError{Detail: "request body is not valid JSON: " + err.Error()}
	}
	if owner != 0 {
		if req.UserID == nil {
			req.UserID = &owner
		} else if *req.UserID != owner {
			return NewOrder{}, ErrUserMismatch
		}
	}
	o, err := req.validate()
	o.Owner = owner
	return o, err
}

func expectedType(e *json.UnmarshalTypeError) string {
	switch e.Type.Kind().String() {
	case "int64", "int":
		return "integer"
	case "string":
		return "string"
	case "slice":
		return "array"
	case "struct", "ptr":
		return "object"
	}
	return e.Type.String()
}

func (req createRequest) validate() (NewOrder, error) {
	var errs []web.FieldError
	add := func(field, msg string) { errs = append(errs, web.FieldError{Field: field, Message: msg}) }

	o := NewOrder{}
	switch {
	case req.UserID == nil:
		add("user_id", "is required")
	case *req.UserID <= 0:
		add("user_id", "must be a positive integer")
	default:
		o.UserID = *req.UserID
	}
	switch {
	case req.UserEmail == nil || *req.UserEmail == "":
		add("user_email", "is required")
	case !validEmail(*req.UserEmail):
		add("user_email", "must be a plain email address such as name@example.com")
	default:
		o.UserEmail = *req.UserEmail
	}
	switch {
	case len(req.Items) == 0:
		add("items", "must hold at least one item")
	case len(req.Items) > MaxItems:
		add("items", fmt.Sprintf("must hold at most %d items", MaxItems))
	}
	if len(req.Items) <= MaxItems {
		var total money.Amount
		for i, it := range req.Items {
			field := func(name string) string { return fmt.Sprintf("items[%d].%s", i, name) }
			var item Item
			ok := true
			switch {
			case it.ProductID == nil:
				add(field("product_id"), "is required")
				ok = false
			case *it.ProductID <= 0:
				add(field("product_id"), "must be a positive integer")
				ok = false
			default:
				item.ProductID = *it.ProductID
			}
			switch {
			case it.Quantity == nil:
				add(field("quantity"), "is required")
				ok = false
			case *it.Quantity <= 0 || *it.Quantity > MaxQuantity:
				add(field("quantity"), fmt.Sprintf("must be an integer from 1 to %d", MaxQuantity))
				ok = false
			default:
				item.Quantity = int(*it.Quantity)
			}
			price, err := parsePrice(it.Price)
			if err != nil {
				add(field("price"), err.Error())
				ok = false
			}
			item.Price = price
			if !ok {
				continue
			}
			line, err := price.Mul(int64(item.Quantity))
			if err == nil {
				total, err = total.Add(line)
			}
			if err != nil {
				add("items", "the order total exceeds 9999999999.99")
				break
			}
			o.Items = append(o.Items, item)
		}
		o.Total = total
	}
	if len(errs) > 0 {
		return NewOrder{}, &ValidationError{Fields: errs}
	}
	return o, nil
}

func parsePrice(raw json.RawMessage) (money.Amount, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, errors.New("is required")
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return 0, errors.New(`must be a decimal string such as "1299.99", not a JSON number`)
	}
	a, err := money.Parse(s)
	if err != nil {
		return 0, err
	}
	return a, nil
}
