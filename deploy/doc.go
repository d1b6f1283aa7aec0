// Package deploy holds what ships the checkout: the Kubernetes manifests in
// kubernetes/ (a kustomize base and overlays) and, in its tests, the checks
// that hold docker-compose.yml, the Dockerfiles and the rendered manifests to
// the services' code: every environment variable they set is one a service
// reads (its envconfig tags), every port and probe path is one the service
// serves, and the binaries built with the Dockerfiles' flags are static and
// answer their own healthcheck. README.md says how to run each of them.
package deploy
