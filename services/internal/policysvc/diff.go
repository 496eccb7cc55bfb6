package policysvc

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
)

// diff lists the leaf fields that differ between two documents, sorted by path. It walks the messages
// through protoreflect, so a field added to the API is compared without changes here.
func diff(from, to *policyv1.PolicyDocument) []*policyv1.Change {
	a, b := leaves(from), leaves(to)
	paths := slices.Sorted(maps.Keys(a))
	for p := range b {
		if _, ok := a[p]; !ok {
			paths = append(paths, p)
		}
	}
	slices.Sort(paths)
	var out []*policyv1.Change
	for _, p := range paths {
		av, aok := a[p]
		bv, bok := b[p]
		if aok == bok && av == bv {
			continue
		}
		out = append(out, &policyv1.Change{FieldPath: p, OldValue: av, NewValue: bv})
	}
	return out
}

// leaves maps the path of every set scalar of m to its value as text. Unset fields (and proto3
// scalars at their zero value) have no entry.
func leaves(m proto.Message) map[string]string {
	out := map[string]string{}
	if m == nil {
		return out
	}
	walk(m.ProtoReflect(), "", out)
	return out
}

func walk(m protoreflect.Message, prefix string, out map[string]string) {
	if !m.IsValid() {
		return
	}
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if !m.Has(fd) {
			continue
		}
		path := string(fd.Name())
		if prefix != "" {
			path = prefix + "." + path
		}
		v := m.Get(fd)
		switch {
		case fd.IsMap():
			mp := v.Map()
			var keys []protoreflect.MapKey
			mp.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
				keys = append(keys, k)
				return true
			})
			slices.SortFunc(keys, func(x, y protoreflect.MapKey) int { return cmp.Compare(x.String(), y.String()) })
			for _, k := range keys {
				leaf(fd.MapValue(), mp.Get(k), keyPath(path, k.String()), out)
			}
		case fd.IsList():
			l := v.List()
			for j := range l.Len() {
				leaf(fd, l.Get(j), fmt.Sprintf("%s[%d]", path, j), out)
			}
		default:
			leaf(fd, v, path, out)
		}
	}
}

func leaf(fd protoreflect.FieldDescriptor, v protoreflect.Value, path string, out map[string]string) {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		walk(v.Message(), path, out)
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			out[path] = string(ev.Name())
		} else {
			out[path] = strconv.Itoa(int(v.Enum()))
		}
	case protoreflect.StringKind:
		// A set empty string (which removes a header) must differ from an unset field.
		if s := v.String(); s != "" {
			out[path] = s
		} else {
			out[path] = `""`
		}
	default:
		out[path] = v.String()
	}
}
