package grpcserver

import (
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	wardenapi "github.com/warden-sec/warden/gen/warden"
)

// registerReflection serves reflection from the descriptor set built with source info, so that
// `grpcurl describe` shows every RPC's and field's comments; anything not in it (health, reflection
// itself) comes from the linked-in registry.
func registerReflection(gs *grpc.Server) error {
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(wardenapi.DescriptorSet, &set); err != nil {
		return fmt.Errorf("descriptor set: %w", err)
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		return fmt.Errorf("descriptor set: %w", err)
	}
	opts := reflection.ServerOptions{Services: gs, DescriptorResolver: layered{files}, ExtensionResolver: protoregistry.GlobalTypes}
	reflectionv1.RegisterServerReflectionServer(gs, reflection.NewServerV1(opts))
	reflectionv1alpha.RegisterServerReflectionServer(gs, reflection.NewServer(opts))
	return nil
}

type layered struct{ first *protoregistry.Files }

func (l layered) FindFileByPath(p string) (protoreflect.FileDescriptor, error) {
	if fd, err := l.first.FindFileByPath(p); err == nil {
		return fd, nil
	}
	return protoregistry.GlobalFiles.FindFileByPath(p)
}

func (l layered) FindDescriptorByName(n protoreflect.FullName) (protoreflect.Descriptor, error) {
	if d, err := l.first.FindDescriptorByName(n); err == nil {
		return d, nil
	}
	return protoregistry.GlobalFiles.FindDescriptorByName(n)
}

// anonymousReflectionAllowed lets a caller without credentials resolve the health service only, so
// `grpcurl … grpc.health.v1.Health/Check` works without a certificate while the API's shape is shown
// to authenticated callers only.
func anonymousReflectionAllowed(m any) bool {
	const health = "grpc.health.v1."
	switch r := m.(type) {
	case *reflectionv1.ServerReflectionRequest:
		return strings.HasPrefix(r.GetFileContainingSymbol(), health) || r.GetFileByFilename() == "grpc/health/v1/health.proto"
	case *reflectionv1alpha.ServerReflectionRequest:
		return strings.HasPrefix(r.GetFileContainingSymbol(), health) || r.GetFileByFilename() == "grpc/health/v1/health.proto"
	}
	return false
}
