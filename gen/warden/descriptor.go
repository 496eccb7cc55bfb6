// Package warden holds the API's descriptor set with source info (comments), built by `buf build` in
// `make generate`. The server's reflection serves it, so `grpcurl describe` shows the documentation.
package warden

import _ "embed"

// DescriptorSet is a serialized google.protobuf.FileDescriptorSet of every Warden proto and its imports,
// with source code info.
//
//go:embed descriptor.binpb
var DescriptorSet []byte
