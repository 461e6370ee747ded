package apistandin

import (
	"crypto/rand"
	"encoding/hex"
)

// imagePostParse is image-is-stored-at-location.ts: whatever location the
// client sent, the image is stored at REGISTRY2_HOST/v2/<32 lowercase hex>.
func (s *Server) imagePostParse(raw map[string]any) *apiError {
	for attempt := 0; attempt < 5; attempt++ {
		candidate := s.cfg.RegistryHost + "/v2/" + randomHex(16)
		taken := false
		for _, img := range s.st.tables["image"] {
			if img.str("is_stored_at__image_location") == candidate {
				taken = true
				break
			}
		}
		if !taken {
			raw["is_stored_at__image_location"] = candidate
			return nil
		}
	}
	return emptyError(500)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
