// Package grpcurltest runs the README's grpcurl recipes with the real, pinned grpcurl binary against a
// running wardend, so the documented commands cannot rot.
package grpcurltest
