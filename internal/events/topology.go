package events

import "regexp"

// The topology is part of the contract: every queue any service will ever
// consume from, with its bindings. Every service declares all of it at start
// (with each queue's retry and dead-letter queues), so an event published
// before its consumer first started still reaches that consumer's queue.

// Queue names.
const (
	// QueuePayment is the payment service's queue: orders to charge and
	// orders cancelled by the saga (whose late charge must be refunded).
	QueuePayment = "payment.order-created"
	// QueueEmail is the email service's queue of mails to send.
	QueueEmail = "email.payment-results"
	// QueueOrderSaga is the order service's queue of what happened to its
	// orders downstream: payment results, refunds and mail outcomes.
	QueueOrderSaga = "order.saga-events"
)

// QueueSpec is one consumer queue and the routing keys bound to it.
type QueueSpec struct {
	Name     string
	Bindings []string
}

// Topology lists every consumer queue of the system.
var Topology = []QueueSpec{
	{Name: QueuePayment, Bindings: []string{RouteOrderCreated, RouteOrderCancelled}},
	{Name: QueueEmail, Bindings: []string{RoutePaymentProcessed, RoutePaymentFailed, RouteOrderCancelled}},
	{Name: QueueOrderSaga, Bindings: []string{RoutePaymentProcessed, RoutePaymentFailed, RoutePaymentRefunded, RouteEmailSent, RouteEmailFailed}},
}

// QueueBindings returns the routing keys bound to the named queue, or nil.
func QueueBindings(name string) []string {
	for _, q := range Topology {
		if q.Name == name {
			return q.Bindings
		}
	}
	return nil
}

// RetryLevels is how many delay queues each consumer queue has: retry N
// waits in <queue>.retry.N (N from 1 to RetryLevels; later retries reuse
// the last level). It is fixed by the contract, not by a service's
// CONSUMER_MAX_ATTEMPTS, so that every service declares the same queues.
const RetryLevels = 4

// DeliveryLimit is the x-delivery-limit of the main (quorum) queues: a
// message handed back this many times without being settled (the consumer
// crashing on it again and again) goes to the queue's dead-letter queue
// instead of circling forever. Retries do not count: they are new messages.
const DeliveryLimit = 50

// QueueNames lists every queue of the topology: each consumer queue, its
// retry queues and its dead-letter queue.
func QueueNames() []string {
	var names []string
	for _, q := range Topology {
		names = append(names, q.Name)
		for n := 1; n <= RetryLevels; n++ {
			names = append(names, RetryQueue(q.Name, n))
		}
		names = append(names, DeadLetterQueue(q.Name))
	}
	return names
}

// MainQueueArgs are the arguments a consumer queue is declared with: a
// quorum queue, nothing more. Its dead-lettering and delivery limit come
// from the queue's policy (see Policies): RabbitMQ checks read permission on
// a queue declared with an x-dead-letter-exchange argument, and every
// service declares every main queue but may read only its own.
func MainQueueArgs(string) map[string]any {
	return map[string]any{"x-queue-type": "quorum"}
}

// RetryQueueArgs are the arguments of a delay queue of a consumer queue: a
// classic queue with none (for the same reason). Its messages carry their
// own TTL and expire back onto the consumer queue by its retry policy.
func RetryQueueArgs(string) map[string]any { return nil }

// A Policy is a RabbitMQ policy of the topology, set on the vhost by whoever
// administers the broker (compose's definitions, the Kubernetes Policy
// resources, scripts/users.sh for a native run), never by a service: setting
// policies needs the policymaker tag.
type Policy struct {
	Name       string         `json:"name"`
	Pattern    string         `json:"pattern"`
	ApplyTo    string         `json:"apply-to"`
	Priority   int            `json:"priority"`
	Definition map[string]any `json:"definition"`
}

// PolicyPriority is the priority of the topology's policies: RabbitMQ
// applies one policy to a queue, the highest, so these win over a catch-all
// of the operator's at the default priority 0.
const PolicyPriority = 10

// QueuePolicies returns the policies of the consumer queue name: its
// messages handed back more than DeliveryLimit times are dead-lettered (at
// least once) to its dead-letter queue through the default exchange, and
// expired messages of its retry queues go back to it.
func QueuePolicies(name string) []Policy {
	quoted := regexp.QuoteMeta(name)
	return []Policy{
		{Name: name, Pattern: "^" + quoted + "$", ApplyTo: "queues", Priority: PolicyPriority, Definition: map[string]any{
			"delivery-limit":          DeliveryLimit,
			"dead-letter-exchange":    "",
			"dead-letter-routing-key": DeadLetterQueue(name),
			"dead-letter-strategy":    "at-least-once",
			"overflow":                "reject-publish",
		}},
		{Name: name + ".retry", Pattern: "^" + quoted + `\.retry\.[0-9]+$`, ApplyTo: "queues", Priority: PolicyPriority, Definition: map[string]any{
			"dead-letter-exchange":    "",
			"dead-letter-routing-key": name,
		}},
	}
}

// Policies returns the policies of the whole topology.
func Policies() []Policy {
	var out []Policy
	for _, q := range Topology {
		out = append(out, QueuePolicies(q.Name)...)
	}
	return out
}
