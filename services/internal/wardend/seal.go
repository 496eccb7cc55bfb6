package wardend

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"

	"github.com/warden-sec/warden/services/internal/seal"
)

// loadSealKeys loads --seal-key-file, or in dev mode (no file given) the generated <data-dir>/seal.key.
// Dev mode keeps the key beside the data it protects, so it is announced loudly on every start.
func loadSealKeys(cfg *Config, log *slog.Logger) (*seal.Keyring, bool, error) {
	if cfg.SealKeyFile != "" {
		k, err := seal.LoadKeyringFile(cfg.SealKeyFile)
		if err != nil {
			return nil, false, fmt.Errorf("--seal-key-file: %w", err)
		}
		return k, false, nil
	}
	path := filepath.Join(cfg.DataDir, "seal.key")
	k, err := seal.LoadKeyringFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		k, err = seal.GenerateKeyringFile(path)
	}
	if err != nil {
		return nil, false, fmt.Errorf("dev seal key %s: %w", path, err)
	}
	log.Warn("DEV MODE: secrets in etcd are sealed with a key stored in the data dir; use --seal-key-file in production", "path", path)
	return k, true, nil
}
