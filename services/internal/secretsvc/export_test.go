package secretsvc

import "context"

// Tick runs one pass of the rotation loop with the service's clock, so tests drive time-based
// transitions (retirement, scheduled rotation) without waiting for them.
func (s *Service) Tick(ctx context.Context) { s.tick(ctx) }
