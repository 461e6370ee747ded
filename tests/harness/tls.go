package harness

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Front is what an operator puts before openBalena: TLS on api.<tld> and
// builder.<tld> with a private CA, routing by host name (haproxy's job).
type Front struct {
	TLD    string
	Port   int
	CAFile string

	srv       *http.Server
	hostsLine string
}

// StartFront serves https://api.<tld>:PORT and https://builder.<tld>:PORT on
// loopback and maps both names to 127.0.0.1 in /etc/hosts until Stop.
func (s *Stack) StartFront(tld string) (*Front, error) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "obb e2e CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "*." + tld},
		DNSNames: []string{"api." + tld, "builder." + tld}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	f := &Front{TLD: tld, CAFile: filepath.Join(s.Root, "front-ca.pem")}
	if err := os.WriteFile(f.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		return nil, err
	}
	proxy := func(target string) *httputil.ReverseProxy {
		u, _ := url.Parse(target)
		p := httputil.NewSingleHostReverseProxy(u)
		p.FlushInterval = -1 // stream the build log as it comes
		return p
	}
	api, builder := proxy(s.APIURL), proxy(s.BuilderURL)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f.Port = lis.Addr().(*net.TCPAddr).Port
	f.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			host, _, _ := strings.Cut(r.Host, ":")
			switch host {
			case "api." + tld:
				api.ServeHTTP(w, r)
			case "builder." + tld:
				builder.ServeHTTP(w, r)
			default:
				http.Error(w, "unknown host "+host, http.StatusMisdirectedRequest)
			}
		}),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}},
		ReadHeaderTimeout: 10 * time.Second,
	}
	go f.srv.ServeTLS(lis, "", "")
	f.hostsLine = fmt.Sprintf("127.0.0.1 api.%s builder.%s # obb e2e", tld, tld)
	hosts, err := os.ReadFile("/etc/hosts")
	if err != nil {
		return nil, err
	}
	if !bytes.Contains(hosts, []byte(f.hostsLine)) {
		if err := os.WriteFile("/etc/hosts", append(append(bytes.TrimRight(hosts, "\n"), '\n'), []byte(f.hostsLine+"\n")...), 0o644); err != nil {
			return nil, fmt.Errorf("map %s in /etc/hosts (needs root): %w", tld, err)
		}
	}
	return f, nil
}

// Stop closes the front and removes its /etc/hosts line.
func (f *Front) Stop() {
	_ = f.srv.Close()
	hosts, err := os.ReadFile("/etc/hosts")
	if err != nil {
		return
	}
	var keep []string
	for _, l := range strings.Split(string(hosts), "\n") {
		if l != f.hostsLine {
			keep = append(keep, l)
		}
	}
	_ = os.WriteFile("/etc/hosts", []byte(strings.Join(keep, "\n")), 0o644)
}

// HTTPSEnv points a CLI at the front instead of plain http.
func (f *Front) HTTPSEnv(c *CLI) {
	var env []string
	for _, e := range c.Env {
		if !strings.HasPrefix(e, "BALENARC_API_URL=") && !strings.HasPrefix(e, "BALENARC_BUILDER_URL=") {
			env = append(env, e)
		}
	}
	c.Env = append(env, fmt.Sprintf("BALENARC_BALENA_URL=%s:%d", f.TLD, f.Port), "NODE_EXTRA_CA_CERTS="+f.CAFile)
}
