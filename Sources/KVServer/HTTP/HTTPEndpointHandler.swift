import Foundation
import NIOCore
import NIOHTTP1

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Answers etcd's plain-HTTP endpoints on a keep-alive HTTP/1.1 connection, with the status codes, headers
/// and bodies Go's net/http gives etcd's handlers.
///
/// NIO's pipelining handler in front of it delivers one request at a time and holds reads while a response is
/// pending, so nothing here queues.
final class HTTPEndpointHandler {
    private struct Request {
        var method: HTTPMethod
        var uri: String
        var version: HTTPVersion
        var keepAlive: Bool
        var bodyBytes = 0
    }

    private struct Response {
        var status: HTTPResponseStatus
        var headers: [(String, String)]
        var body: String
    }

    private enum State {
        case awaitingRequest
        case receiving(Request)
        case responding(Request)
        /// The last response is going out; the connection closes once it is written.
        case closing
    }

    private let endpoints: HTTPEndpoints
    private let requestTimeout: TimeAmount
    private let maxRequestBodyBytes: Int
    private let firstRequestDeadline: NIODeadline

    private var state = State.awaitingRequest
    private var inputClosed = false
    private var removed = false
    private var timeout: Scheduled<Void>?

    init(endpoints: HTTPEndpoints, requestTimeout: TimeAmount, maxRequestBodyBytes: Int,
         firstRequestDeadline: NIODeadline) {
        self.endpoints = endpoints
        self.requestTimeout = requestTimeout
        self.maxRequestBodyBytes = maxRequestBodyBytes
        self.firstRequestDeadline = firstRequestDeadline
    }

    /// The next request must have fully arrived by `deadline`: this bounds both idle keep-alive connections
    /// and clients that trickle a request in.
    private func armTimeout(context: ChannelHandlerContext, deadline: NIODeadline) {
        timeout?.cancel()
        timeout = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
            context.close(promise: nil)
        }
    }

    private func cancelTimeout() {
        timeout?.cancel()
        timeout = nil
    }

    // MARK: Routing

    private func respond(to request: Request, context: ChannelHandlerContext) {
        let target = request.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let path = target.first ?? ""
        let query = target.count > 1 ? target[1] : nil
        switch path {
        case "/health":
            guard request.method == .GET else {
                return send(Self.methodNotAllowed, to: request, context: context)
            }
            let health = endpoints.health
            let healthQuery = HTTPEndpoints.healthQuery(from: query)
            let answer = context.eventLoop.makePromise(of: HealthAnswer.self)
            answer.completeWithTask {
                let (healthy, reason) = await health(healthQuery)
                return HealthAnswer(healthy: healthy, reason: reason)
            }
            answer.futureResult.assumeIsolated().whenSuccess { answer in
                let json = HTTPEndpoints.healthJSON(healthy: answer.healthy, reason: answer.reason)
                // etcd writes a healthy answer itself (Go sniffs it as text) and an unhealthy one with
                // http.Error, which adds the newline and nosniff.
                let response =
                    answer.healthy
                    ? Response(status: .ok, headers: [("Content-Type", Self.textPlain)], body: json)
                    : Self.goError(.serviceUnavailable, json)
                self.send(response, to: request, context: context)
            }
        case "/version":
            guard request.method == .GET else {
                return send(Self.methodNotAllowed, to: request, context: context)
            }
            send(
                Response(status: .ok, headers: [("Content-Type", "application/json")], body: endpoints.versionJSON()),
                to: request, context: context)
        case "/metrics":
            // promhttp answers every method.
            send(
                Response(
                    status: .ok, headers: [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")],
                    body: endpoints.metrics()),
                to: request, context: context)
        default:
            send(Self.goError(.notFound, "404 page not found"), to: request, context: context)
        }
    }

    private struct HealthAnswer: Sendable {
        var healthy: Bool
        var reason: String
    }

    private static let textPlain = "text/plain; charset=utf-8"

    /// What Go's `http.Error` writes.
    private static func goError(_ status: HTTPResponseStatus, _ message: String) -> Response {
        Response(
            status: status,
            headers: [("Content-Type", textPlain), ("X-Content-Type-Options", "nosniff")],
            body: message + "\n")
    }

    /// etcd's `allowMethod` refusal.
    private static var methodNotAllowed: Response {
        var response = goError(.methodNotAllowed, "Method Not Allowed")
        response.headers.insert(("Allow", "GET"), at: 0)
        return response
    }

    private func send(_ response: Response, to request: Request, context: ChannelHandlerContext) {
        guard !removed else { return }
        let keepAlive = request.keepAlive && !inputClosed
        var headers = HTTPHeaders(response.headers)
        headers.add(name: "Date", value: Self.httpDate())
        headers.add(name: "Content-Length", value: String(response.body.utf8.count))
        if !keepAlive {
            headers.add(name: "Connection", value: "close")
        } else if request.version == .http1_0 {
            headers.add(name: "Connection", value: "keep-alive")
        }
        let version = request.version == .http1_0 ? HTTPVersion.http1_0 : .http1_1
        context.write(
            NIOAny(HTTPServerResponsePart.head(HTTPResponseHead(version: version, status: response.status,
                                                                headers: headers))),
            promise: nil)
        if request.method != .HEAD {
            context.write(
                NIOAny(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: response.body)))), promise: nil)
        }
        // Ready for the next request before the end goes out: NIO's pipelining handler hands over a request
        // it held back as soon as it sees the end of this response, before the write completes.
        if keepAlive {
            state = .awaitingRequest
            armTimeout(context: context, deadline: .now() + requestTimeout)
        } else {
            state = .closing
        }
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil)), promise: written)
        written.futureResult.assumeIsolated().whenComplete { result in
            let failed = if case .failure = result { true } else { false }
            if failed || !keepAlive {
                context.close(promise: nil)
            }
        }
    }

    /// The `Date` header Go's server adds, in RFC 7231's IMF-fixdate.
    private static func httpDate() -> String {
        var now = time(nil)
        var parts = tm()
        gmtime_r(&now, &parts)
        var buffer = [CChar](repeating: 0, count: 64)
        let length = strftime(&buffer, buffer.count, "%a, %d %b %Y %H:%M:%S GMT", &parts)
        return String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

extension HTTPEndpointHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    func handlerAdded(context: ChannelHandlerContext) {
        armTimeout(context: context, deadline: firstRequestDeadline)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        removed = true
        cancelTimeout()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch (unwrapInboundIn(data), state) {
        case (.head(let head), .awaitingRequest):
            state = .receiving(
                Request(method: head.method, uri: head.uri, version: head.version, keepAlive: head.isKeepAlive))
        case (.body(let body), .receiving(var request)):
            request.bodyBytes += body.readableBytes
            guard request.bodyBytes <= maxRequestBodyBytes else {
                context.close(promise: nil)
                return
            }
            state = .receiving(request)
        case (.end, .receiving(let request)):
            cancelTimeout()
            state = .responding(request)
            respond(to: request, context: context)
        case (_, .closing):
            break
        default:
            // Parts out of order cannot come from NIO's decoder.
            context.close(promise: nil)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            // The client sends no more requests: answer the one in progress, if any, then close.
            // A request still arriving can never complete.
            inputClosed = true
            switch state {
            case .responding, .closing:
                break
            case .awaitingRequest, .receiving:
                context.close(promise: nil)
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // Parse errors have been answered with a 400 by NIO's error handler; every error ends the connection.
        context.close(promise: nil)
    }
}
