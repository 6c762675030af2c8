import ClusterObjects
import Foundation
import Testing

@Suite struct JSONAndTokenTests {
    @Test func continueTokensAreKubernetes() throws {
        let token = ContinueToken.encode(resourceVersion: 42, startKey: "default/web-0\u{0}")
        var base64 = token.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        let json = String(decoding: try #require(Data(base64Encoded: base64)), as: UTF8.self)
        #expect(json == "{\"v\":\"meta.k8s.io/v1\",\"rv\":42,\"start\":\"default/web-0\\u0000\"}")
        #expect(!token.contains("=") && !token.contains("+") && !token.contains("/"))
        let decoded = try ContinueToken.decode(token)
        #expect(decoded.resourceVersion == 42 && decoded.startKey == "default/web-0\u{0}")
        // A token made by kube-apiserver (Go's base64.RawURLEncoding of the same JSON).
        let fromGo = "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6NDIsInN0YXJ0IjoiZGVmYXVsdC93ZWItMFx1MDAwMCJ9"
        #expect(token == fromGo)
    }

    @Test func serializationIsGoLikeAndOrdered() throws {
        let value = JSONValue.object(["status": .object([:]), "metadata": .object(["name": .string("a<b>&")]),
                                      "kind": .string("Pod"), "apiVersion": .string("v1"), "zeta": .integer(1), "alpha": .number(1.5)])
        #expect(String(decoding: value.serialized(), as: UTF8.self)
                == "{\"kind\":\"Pod\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"a\\u003cb\\u003e\\u0026\"},\"status\":{},\"alpha\":1.5,\"zeta\":1}")
    }

    @Test func unknownPartsAndMerge() throws {
        struct Small: Codable { var a: Int?; var list: [Inner]? }
        struct Inner: Codable { var x: Int }
        let original = try JSONValue(parsing: Array(#"{"a":1,"b":{"c":2},"list":[{"x":1,"y":2},{"x":3}]}"#.utf8))
        let known = try JSONValue(encoding: try original.decode(as: Small.self))
        let unknown = JSONValue.unknownParts(of: original, roundTrip: known)
        #expect(unknown == .object(["b": .object(["c": .integer(2)]), "list": .array([.object(["y": .integer(2)]), .null])]))
        let updated = try JSONValue(encoding: Small(a: nil, list: [Inner(x: 9), Inner(x: 8)]))
        #expect(updated.merging(unknown: unknown) == .object([
            "b": .object(["c": .integer(2)]),
            "list": .array([.object(["x": .integer(9), "y": .integer(2)]), .object(["x": .integer(8)])]),
        ]))
    }
}
