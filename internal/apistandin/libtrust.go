package apistandin

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base32"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// signer holds the registry token key, its self-signed certificate (the
// registry's rootcertbundle) and the libtrust key id used as JWT "kid".
type signer struct {
	key     *ecdsa.PrivateKey
	certPEM []byte
	kid     string
	jwks    []byte
}

func newSigner(issuer string, now time.Time) (*signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: issuer},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create certificate: %w", err)
	}
	kid, err := libtrustKeyID(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	pub, err := key.PublicKey.ECDH()
	if err != nil {
		return nil, err
	}
	point := pub.Bytes() // 0x04 || X || Y
	b64 := base64.RawURLEncoding.EncodeToString
	jwks, err := marshal(object{{"keys", []object{{
		{"kty", "EC"}, {"crv", "P-256"}, {"kid", kid}, {"use", "sig"}, {"alg", "ES256"},
		{"x", b64(point[1:33])}, {"y", b64(point[33:])},
	}}}})
	if err != nil {
		return nil, err
	}
	return &signer{
		key:     key,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		kid:     kid,
		jwks:    jwks,
	}, nil
}

// libtrustKeyID is docker/libtrust's key id: SHA-256 of the PKIX DER
// public key, first 240 bits, base32 without padding, in 12 groups of 4
// characters joined by ':'.
func libtrustKeyID(pub any) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("marshal public key: %w", err)
	}
	sum := sha256.Sum256(der)
	s := strings.TrimRight(base32.StdEncoding.EncodeToString(sum[:30]), "=")
	groups := make([]string, 0, 12)
	for i := 0; i < len(s); i += 4 {
		groups = append(groups, s[i:min(i+4, len(s))])
	}
	return strings.Join(groups, ":"), nil
}

// signJWT signs claims as an ES256 JWT with header {alg, typ, kid}; the
// signature is R||S, 32 bytes each.
func (sg *signer) signJWT(claims any) (string, error) {
	header, err := marshal(object{{"alg", "ES256"}, {"typ", "JWT"}, {"kid", sg.kid}})
	if err != nil {
		return "", err
	}
	payload, err := marshal(claims)
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding.EncodeToString
	input := enc(header) + "." + enc(payload)
	digest := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, sg.key, digest[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return input + "." + enc(sig), nil
}
