// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "RaftKV",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "RaftKV", targets: ["RaftKV"]),
        .library(name: "ClusterObjects", targets: ["ClusterObjects"]),
        .executable(name: "kvserver", targets: ["KVServer"]),
        .executable(name: "etcdctl", targets: ["etcdctl"]),
        .executable(name: "raftbench", targets: ["RaftBench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log", exact: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", exact: "1.8.2"),
    ],
    targets: [
        // The system libsqlite3 (Debian: libsqlite3-dev).
        .systemLibrary(
            name: "CSQLite",
            pkgConfig: "sqlite3",
            providers: [.apt(["libsqlite3-dev"])]
        ),
        .target(
            name: "RaftKV",
            dependencies: [
                "CSQLite",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(name: "ClusterObjects", dependencies: ["RaftKV"]),
        .executableTarget(
            name: "KVServer",
            dependencies: [
                "RaftKV",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "etcdctl",
            dependencies: [
                "RaftKV",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "RaftBench",
            dependencies: [
                "RaftKV",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(name: "RaftTests", dependencies: ["RaftKV"]),
    ]
)
