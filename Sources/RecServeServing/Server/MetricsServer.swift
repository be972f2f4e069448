import Foundation
import RecServeRPC

#if canImport(Glibc)
  import Glibc
#endif

/// Serves Prometheus text at `http://HOST:PORT/metrics` from a thread of its own: RPC calls by
/// method and status code, RPC latency histograms, and what each model serves.
public final class MetricsServer: @unchecked Sendable {
  let server: RecServeServer
  private var listener: Int32 = -1
  private var thread: Thread?
  private let stopped = DispatchSemaphore(value: 0)

  public init(server: RecServeServer) {
    self.server = server
  }

  /// Binds and starts answering; returns the bound port.
  @discardableResult
  public func start(host: String, port: Int) throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw RPCServerError(description: "metrics: cannot create a socket") }
    var one: Int32 = 1
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    let name = host == "localhost" ? "127.0.0.1" : host
    guard inet_pton(AF_INET, name, &address.sin_addr) == 1 else {
      close(fd)
      throw RPCServerError(description: "metrics: '\(host)' is not an IPv4 address")
    }
    let bound = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
      }
    }
    guard bound == 0, listen(fd, 16) == 0 else {
      close(fd)
      throw RPCServerError(
        description:
          "metrics: cannot listen on \(host):\(port) (\(String(cString: strerror(errno))))")
    }
    var actual = sockaddr_in()
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &actual) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    listener = fd
    let thread = Thread { [self] in
      serve()
      stopped.signal()
    }
    thread.name = "recserve-metrics"
    self.thread = thread
    thread.start()
    return Int(UInt16(bigEndian: actual.sin_port))
  }

  public func stop() {
    guard listener >= 0 else { return }
    shutdown(listener, Int32(SHUT_RDWR))
    stopped.wait()
    // The thread's closure holds this exporter (and through it the server): forget the thread,
    // or the two keep each other alive after stop.
    thread = nil
    close(listener)
    listener = -1
  }

  private func serve() {
    while true {
      let connection = accept(listener, nil, nil)
      if connection < 0 {
        if errno == EINTR || errno == ECONNABORTED { continue }
        return
      }
      handle(connection)
      close(connection)
    }
  }

  private func handle(_ connection: Int32) {
    var timeout = timeval(tv_sec: 2, tv_usec: 0)
    setsockopt(connection, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(connection, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var request = [UInt8]()
    var buffer = [UInt8](repeating: 0, count: 4096)
    while request.count < 16_384 {
      let count = buffer.withUnsafeMutableBytes { recv(connection, $0.baseAddress, $0.count, 0) }
      if count <= 0 { break }
      request.append(contentsOf: buffer[0..<count])
      if request.count >= 4, request.suffix(4) == [13, 10, 13, 10] { break }
    }
    let line = String(decoding: request.prefix { $0 != 13 && $0 != 10 }, as: UTF8.self)
    let parts = line.split(separator: " ")
    let response: String
    if parts.count >= 2, parts[0] == "GET",
      parts[1] == "/metrics" || parts[1].hasPrefix("/metrics?")
    {
      let body = render()
      response =
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
        + "Content-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body
    } else {
      let body = "not found: metrics are at /metrics\n"
      response =
        "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\n"
        + "Connection: close\r\n\r\n" + body
    }
    var bytes = Array(response.utf8)
    var sent = 0
    while sent < bytes.count {
      let count = bytes.withUnsafeMutableBytes {
        send(connection, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL))
      }
      if count <= 0 { break }
      sent += count
    }
  }

  /// The Prometheus text exposition.
  public func render() -> String {
    var out = ""
    out += "# HELP recserve_rpc_calls_total RPC calls finished, by method and status code.\n"
    out += "# TYPE recserve_rpc_calls_total counter\n"
    let stats = server.rpc.methodStats
    for method in stats {
      for (code, count) in method.callsByCode {
        out += "recserve_rpc_calls_total{method=\"\(method.path)\",code=\"\(code)\"} \(count)\n"
      }
    }
    out += "# HELP recserve_rpc_latency_seconds Time from accepting a call to sending its status.\n"
    out += "# TYPE recserve_rpc_latency_seconds histogram\n"
    for method in stats {
      let counts = method.bucketCounts
      let total = counts.reduce(0, +)
      if total == 0 { continue }
      var cumulative = 0
      for (index, bound) in MethodStats.bucketBounds.enumerated() {
        cumulative += counts[index]
        out +=
          "recserve_rpc_latency_seconds_bucket{method=\"\(method.path)\",le=\"\(bound)\"} \(cumulative)\n"
      }
      out += "recserve_rpc_latency_seconds_bucket{method=\"\(method.path)\",le=\"+Inf\"} \(total)\n"
      out += "recserve_rpc_latency_seconds_sum{method=\"\(method.path)\"} \(method.totalSeconds)\n"
      out += "recserve_rpc_latency_seconds_count{method=\"\(method.path)\"} \(total)\n"
    }
    let snapshot = server.registry.snapshot
    out +=
      "# HELP recserve_model_serving_version The version a request naming no version or label gets (0: none).\n"
    out += "# TYPE recserve_model_serving_version gauge\n"
    for name in snapshot.models.keys.sorted() {
      out +=
        "recserve_model_serving_version{model=\"\(name)\"} \(snapshot.models[name]!.serving?.version ?? 0)\n"
    }
    out += "# HELP recserve_model_versions Versions on disk, by state.\n"
    out += "# TYPE recserve_model_versions gauge\n"
    for name in snapshot.models.keys.sorted() {
      var counts: [String: Int] = ["available": 0, "failed": 0, "loading": 0, "unloaded": 0]
      for record in snapshot.models[name]!.versions.values {
        switch record.state {
        case .available: counts["available", default: 0] += 1
        case .failed: counts["failed", default: 0] += 1
        case .loading: counts["loading", default: 0] += 1
        case .unloaded: counts["unloaded", default: 0] += 1
        }
      }
      for state in counts.keys.sorted() {
        out += "recserve_model_versions{model=\"\(name)\",state=\"\(state)\"} \(counts[state]!)\n"
      }
    }
    return out
  }
}
