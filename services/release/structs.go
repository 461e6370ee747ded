package release

import "google.golang.org/protobuf/types/known/structpb"

// structMap is a Struct as a JSON object; nil when absent.
func structMap(s *structpb.Struct) map[string]any {
	if s == nil {
		return nil
	}
	return s.AsMap()
}
