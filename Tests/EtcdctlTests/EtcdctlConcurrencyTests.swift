import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// `lock` and `elect`: our etcdctl and the real one take the same locks and run in the same elections on one
/// kvserver, so each must wait for the other as etcd's recipes do; their outputs are compared with the lease IDs
/// in the keys (random) and the revisions normalised.
final class EtcdctlConcurrencyTests: SharedServerTestCase {
    /// `name/<lease ID in hex>` → `name/LEASE`.
    static func normaliseKeys(_ text: String, _ name: String) -> String {
        text.replacingOccurrences(of: NSRegularExpression.escapedPattern(for: name) + "/[0-9a-f]+", with: name + "/LEASE",
                                  options: .regularExpression)
    }

    func keys(_ server: Server, prefix: String) throws -> [String] {
        try server.realEtcdctl(["get", "--prefix", "--keys-only", prefix]).stdout.split(separator: "\n").map(String.init)
    }

    /// A holder prints its key (and the empty value) once it holds the lock; a second locker waits, silent, until
    /// the holder is interrupted (which unlocks), then holds it in turn. Both ways round: ours waits for the real
    /// one and the real one for ours.
    func testLockContention() throws {
        let server = try requireServer()
        for (holderIsReal, name) in [(true, "lk1"), (false, "lk2")] {
            let holder = try Background.etcdctl(real: holderIsReal, server: server, ["lock", name])
            XCTAssertTrue(holder.waitForOutput { $0.hasSuffix("\n\n") }, "holder never locked: \(holder.stderr)")
            let held = holder.stdout
            XCTAssertEqual(Self.normaliseKeys(held, name), "\(name)/LEASE\n\n")
            let waiter = try Background.etcdctl(real: !holderIsReal, server: server, ["lock", name])
            // The waiter has put its key in the queue and is waiting.
            XCTAssertTrue(waitUntil { (try? self.keys(server, prefix: name + "/").count) == 2 }, "waiter never queued")
            usleep(300_000)
            XCTAssertEqual(waiter.stdout, "", "the waiter took a held lock")
            XCTAssertTrue(waiter.isRunning)
            holder.signal(SIGINT)
            XCTAssertEqual(holder.waitForExit(), 0, holder.stderr)
            XCTAssertEqual(holder.stderr, "")
            XCTAssertTrue(waiter.waitForOutput { $0.hasSuffix("\n\n") }, "waiter never locked: \(waiter.stderr)")
            XCTAssertEqual(Self.normaliseKeys(waiter.stdout, name), "\(name)/LEASE\n\n")
            XCTAssertNotEqual(waiter.stdout, held)
            XCTAssertEqual(try keys(server, prefix: name + "/"), [waiter.stdout.trimmingCharacters(in: .newlines)])
            waiter.signal(SIGTERM)
            XCTAssertEqual(waiter.waitForExit(), 0, waiter.stderr)
            XCTAssertEqual(try keys(server, prefix: name + "/"), [], "unlock left the key")
        }
    }

    /// A waiter interrupted before it gets the lock fails with `context canceled` and leaves the queue.
    func testLockInterruptedWhileWaiting() throws {
        let server = try requireServer()
        let holder = try Background.etcdctl(real: true, server: server, ["lock", "lk3"])
        XCTAssertTrue(holder.waitForOutput { $0.hasSuffix("\n\n") })
        var results: [String] = []
        for real in [true, false] {
            let waiter = try Background.etcdctl(real: real, server: server, ["lock", "lk3"])
            XCTAssertTrue(waitUntil { (try? self.keys(server, prefix: "lk3/").count) == 2 }, "waiter never queued")
            waiter.signal(SIGINT)
            let status = waiter.waitForExit()
            results.append("\(status.map(String.init) ?? "killed") \(waiter.stdout) \(waiter.stderr)")
            XCTAssertEqual(try keys(server, prefix: "lk3/").count, 1, "the waiter's key stayed")
        }
        XCTAssertEqual(results[0], "1  Error: context canceled\n")
        XCTAssertEqual(results[0], results[1])
        holder.signal(SIGINT)
        XCTAssertEqual(holder.waitForExit(), 0)
    }

    /// `lock name -- command`: the command runs holding the lock, with ETCD_LOCK_KEY (the lock's key, there
    /// while it runs) and ETCD_LOCK_REV (its create revision); the lock is released after. The command's failure
    /// is etcdctl's error.
    func testLockRunsCommand() throws {
        let server = try requireServer()
        let script = "echo \"$ETCD_LOCK_KEY $ETCD_LOCK_REV\"; \(Server.realEtcdctlPath) --endpoints=\(server.endpoint) -w fields get \"$ETCD_LOCK_KEY\" | grep CreateRevision"
        for real in [true, false] {
            let run = try server.run(real: real, ["lock", "lk4", "--", "sh", "-c", script])
            XCTAssertEqual(run.status, 0, run.stderr)
            let lines = run.stdout.split(separator: "\n").map(String.init)
            XCTAssertEqual(lines.count, 2, run.stdout)
            guard lines.count == 2 else { continue }
            let words = lines[0].split(separator: " ")
            XCTAssertEqual(Self.normaliseKeys(String(words[0]), "lk4"), "lk4/LEASE")
            XCTAssertEqual(lines[1], "\"CreateRevision\" : \(words[1])", "ETCD_LOCK_REV is the key's create revision")
            XCTAssertEqual(try keys(server, prefix: "lk4/"), [])
        }
        let cases: [[String]] = [
            ["lock", "lk5", "--", "sh", "-c", "echo out; echo err >&2; exit 3"],
            ["lock", "lk5", "--", "no-such-command-here"],
            ["lock", "lk5", "--", "/no/such/file"],
            ["lock", "--ttl=5", "-w", "json", "lk5", "--", "true"],
            ["lock"],
            ["elect"], ["elect", "e"], ["elect", "-l", "e", "p"], ["elect", "e", "p", "q"],
            ["lock", "-h"], ["elect", "--help"], ["lock", "--ttl=x", "a"],
        ]
        for args in cases {
            let a = try server.run(real: true, args), b = try server.run(real: false, args)
            XCTAssertEqual(a.status, b.status, "\(args)")
            XCTAssertEqual(a.stdout, b.stdout, "\(args)")
            XCTAssertEqual(a.stderr, b.stderr, "\(args)")
        }
        XCTAssertEqual(try keys(server, prefix: "lk5/"), [])
    }

    /// Observers (ours and the real one, in simple and json) see each leader's proposal in turn while campaigners
    /// of both kinds take over from one another; a campaigner waits while another leads.
    func testElectAndObserve() throws {
        let server = try requireServer()
        var observers: [Background] = []
        for real in [true, false] {
            observers.append(try Background.etcdctl(real: real, server: server, ["elect", "-l", "el"]))
            observers.append(try Background.etcdctl(real: real, server: server, ["-w", "json", "elect", "-l", "el"]))
        }
        // The observers have their watch in place once they started; give them a moment to connect.
        usleep(500_000)
        var campaigners: [Background] = []
        var previous: Background?
        for (index, real) in [false, true, false].enumerated() {
            let proposal = "p\(index + 1)"
            let campaigner = try Background.etcdctl(real: real, server: server, ["elect", "el", proposal])
            if let previous {
                XCTAssertTrue(waitUntil { (try? self.keys(server, prefix: "el/").count) == 2 }, "campaigner never queued")
                usleep(300_000)
                XCTAssertEqual(campaigner.stdout, "", "elected while another leads")
                previous.signal(SIGINT)
                XCTAssertEqual(previous.waitForExit(), 0, previous.stderr)
            }
            XCTAssertTrue(campaigner.waitForOutput { $0.hasSuffix("\n\(proposal)\n") }, "never elected: \(campaigner.stderr)")
            XCTAssertEqual(Self.normaliseKeys(campaigner.stdout, "el"), "el/LEASE\n\(proposal)\n")
            let base64 = Data(proposal.utf8).base64EncodedString()
            for observer in observers {
                XCTAssertTrue(observer.waitForOutput { $0.contains("\n\(proposal)\n") || $0.contains("\"\(base64)\"") },
                              "observer missed \(proposal)")
            }
            campaigners.append(campaigner)
            previous = campaigner
        }
        previous?.signal(SIGTERM)
        XCTAssertEqual(previous?.waitForExit(), 0)
        XCTAssertEqual(try keys(server, prefix: "el/"), [], "resign left the key")
        for observer in observers {
            observer.signal(SIGINT)
            XCTAssertEqual(observer.waitForExit(), 0, observer.stderr)
        }
        let leaders = campaigners.map { $0.stdout }.joined()
        XCTAssertEqual(observers[0].stdout, leaders)
        XCTAssertEqual(observers[2].stdout, leaders)
        XCTAssertEqual(observers[1].stdout, observers[3].stdout)
        XCTAssertEqual(observers[1].stdout.split(separator: "\n").count, 3, observers[1].stdout)
    }

    func waitUntil(timeout: TimeInterval = 10, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if condition() { return true }
            usleep(50_000)
        }
        return false
    }
}
