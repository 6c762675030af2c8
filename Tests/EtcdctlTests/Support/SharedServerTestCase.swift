import Foundation
import XCTest

/// A test class whose tests share one kvserver, started before the first test and stopped after the last.
/// Subclasses say how it starts (``serverArguments``) and what it needs first (``prepare(_:)``).
class SharedServerTestCase: XCTestCase {
    /// Each subclass's server, or why it did not start (class methods run per subclass; XCTest runs one test
    /// at a time).
    nonisolated(unsafe) private static var servers: [ObjectIdentifier: Result<Server, StartFailure>] = [:]

    private struct StartFailure: Error {
        var reason: String
    }

    /// Extra kvserver flags for this class's server.
    class var serverArguments: [String] { [] }

    /// Runs once the server serves, before any test (users, auth, …).
    class func prepare(_ server: Server) throws {}

    override class func setUp() {
        super.setUp()
        let result: Result<Server, StartFailure>
        do {
            guard let server = try Server.start(extraArguments: serverArguments) else {
                throw StartFailure(reason: "kvserver, our etcdctl or the real one is missing")
            }
            do {
                try prepare(server)
                result = .success(server)
            } catch {
                server.stop()
                result = .failure(StartFailure(reason: "\(error)"))
            }
        } catch {
            result = .failure(StartFailure(reason: "\(error)"))
        }
        servers[ObjectIdentifier(self)] = result
    }

    override class func tearDown() {
        if case .success(let server)? = servers.removeValue(forKey: ObjectIdentifier(self)) {
            server.stop()
        }
        super.tearDown()
    }

    /// The class's server; a failure, not a skip, when it did not start (.ci/run installs the real etcdctl and
    /// `swift build` builds kvserver).
    func requireServer() throws -> Server {
        switch Self.servers[ObjectIdentifier(type(of: self))] {
        case .success(let server)?:
            return server
        case .failure(let failure)?:
            XCTFail("no server: \(failure.reason) (needs kvserver and /usr/bin/etcdctl)")
        case nil:
            XCTFail("no server: the class setUp did not run")
        }
        throw CancellationError()
    }
}
