// Package e2e holds the end-to-end tests: the four services run as
// processes (System, in system_test.go), as `make run` runs them, against
// the real PostgreSQL, RabbitMQ and Mailpit, each test with its own
// databases, vhost and inbox.
package e2e
