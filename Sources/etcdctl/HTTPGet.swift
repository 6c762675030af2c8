import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A plain GET (Go's http.Get) for the `/metrics` page; with TLS, the run's client certificate and CA are not
/// used (the system's trust applies), a difference documented in docs/etcdctl.md.
func httpGet(_ url: URL, tls: TLSSettings?) async throws -> (Data, URLResponse) {
    var request = URLRequest(url: url)
    request.timeoutInterval = 10
    return try await URLSession.shared.data(for: request)
}
