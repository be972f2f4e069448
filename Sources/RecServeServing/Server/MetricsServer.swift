import Foundation
import RecServeRPC

#if canImport(Glibc)
  import Glibc
#endif

/// Serves Prometheus text at `http://HOST:PORT/metrics` from a thread of its own: RPC calls by
/// method and status code, RPC latency histograms, and what each model serves.
///
/// One thread multiplexes every connection with poll(2), so a slow client holds no one up: each
/// connection gets `requestTimeout` seconds to send its request head and as long again to take
/// the response, then it is closed; at most `maxConnections` are open at once (more are closed
/// as they arrive). `stop()` wakes the thread through a pipe and never waits on a client.
/// Listens on every address `host` resolves to (IPv4 or IPv6, e.g. `::1`; `localhost` gives
/// both loopback addresses).
public final class MetricsServer: @unchecked Sendable {
  let server: RecServeServer
  /// Seconds a client has to send its request head, and again to take the response.
  public let requestTimeout: Double
  /// Connections open at once; more are closed as soon as they are accepted.
  public let maxConnections: Int
  /// A request head longer than this is answered without reading more.
  static let maxHeadBytes = 16_384

  private var listeners: [Int32] = []
  /// The thread reads the first descriptor; `stop()` writes to the second.
  private var wake: (read: Int32, write: Int32) = (-1, -1)
  private var thread: Thread?
  private let stopped = DispatchSemaphore(value: 0)

  public init(server: RecServeServer, requestTimeout: Double = 5, maxConnections: Int = 64) {
    self.server = server
    self.requestTimeout = requestTimeout
    self.maxConnections = max(1, maxConnections)
  }

  /// Binds and starts answering; returns the bound port.
  @discardableResult
  public func start(host: String, port: Int) throws -> Int {
    var name = host
    if name.hasPrefix("[") && name.hasSuffix("]") { name = String(name.dropFirst().dropLast()) }
    var hints = addrinfo()
    hints.ai_family = AF_UNSPEC
    hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
    var list: UnsafeMutablePointer<addrinfo>?
    let status = getaddrinfo(name, String(port), &hints, &list)
    guard status == 0, let list else {
      throw RPCServerError(
        description:
          "metrics: cannot resolve '\(host)' (\(String(cString: gai_strerror(status))))")
    }
    defer { freeaddrinfo(list) }
    var bound = port
    var failure = ""
    var addresses: [addrinfo] = []
    var cursor: UnsafeMutablePointer<addrinfo>? = list
    while let info = cursor {
      addresses.append(info.pointee)
      cursor = info.pointee.ai_next
    }
    // `::` alone takes IPv4 clients too (as the gRPC listener does); when the name also
    // resolves to IPv4 addresses, those get sockets of their own.
    let separate = addresses.contains { $0.ai_family == AF_INET }
    for info in addresses {
      do {
        let (fd, actual) = try listen(on: info, port: bound, v6only: separate)
        listeners.append(fd)
        bound = actual
      } catch {
        failure = "\(error)"
      }
    }
    guard !listeners.isEmpty else {
      throw RPCServerError(description: "metrics: cannot listen on \(host):\(port) (\(failure))")
    }
    var fds: [Int32] = [-1, -1]
    guard pipe(&fds) == 0 else {
      for fd in listeners { close(fd) }
      listeners = []
      throw RPCServerError(description: "metrics: cannot create a pipe")
    }
    for fd in fds + listeners { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
    wake = (fds[0], fds[1])
    let thread = Thread { [self] in
      serve()
      stopped.signal()
    }
    thread.name = "recserve-metrics"
    self.thread = thread
    thread.start()
    return bound
  }

  /// A listening socket on `info`'s address at `port` (0: any); returns it and the bound port.
  private func listen(on info: addrinfo, port: Int, v6only: Bool) throws -> (Int32, Int) {
    let fd = socket(info.ai_family, info.ai_socktype | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw RPCServerError(description: String(cString: strerror(errno))) }
    var one: Int32 = 1
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    if info.ai_family == AF_INET6 && v6only {
      setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &one, socklen_t(MemoryLayout<Int32>.size))
    }
    var address = sockaddr_storage()
    withUnsafeMutableBytes(of: &address) { target in
      target.copyMemory(
        from: UnsafeRawBufferPointer(start: info.ai_addr, count: Int(info.ai_addrlen)))
    }
    Self.setPort(&address, port)
    let result = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, info.ai_addrlen) }
    }
    guard result == 0, Glibc.listen(fd, 64) == 0 else {
      let reason = String(cString: strerror(errno))
      close(fd)
      throw RPCServerError(description: reason)
    }
    var actual = sockaddr_storage()
    var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
    _ = withUnsafeMutablePointer(to: &actual) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return (fd, Self.port(of: actual))
  }

  private static func setPort(_ address: inout sockaddr_storage, _ port: Int) {
    let network = in_port_t(UInt16(port).bigEndian)
    withUnsafeMutablePointer(to: &address) { pointer in
      if Int32(pointer.pointee.ss_family) == AF_INET6 {
        pointer.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) {
          $0.pointee.sin6_port = network
        }
      } else {
        pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
          $0.pointee.sin_port = network
        }
      }
    }
  }

  private static func port(of address: sockaddr_storage) -> Int {
    var copy = address
    return withUnsafePointer(to: &copy) { pointer in
      if Int32(pointer.pointee.ss_family) == AF_INET6 {
        return pointer.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) {
          Int(UInt16(bigEndian: $0.pointee.sin6_port))
        }
      }
      return pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
        Int(UInt16(bigEndian: $0.pointee.sin_port))
      }
    }
  }

  /// Stops answering and closes every connection; returns at once (no client is waited for).
  public func stop() {
    guard wake.write >= 0 else { return }
    var byte: UInt8 = 1
    _ = write(wake.write, &byte, 1)
    stopped.wait()
    // The thread's closure holds this exporter (and through it the server): forget the thread,
    // or the two keep each other alive after stop.
    thread = nil
    for fd in listeners { close(fd) }
    listeners = []
    close(wake.read)
    close(wake.write)
    wake = (-1, -1)
  }

  /// One client: what it sent, then the response going out.
  private struct Connection {
    let fd: Int32
    var deadline: Double
    var request: [UInt8] = []
    var response: [UInt8] = []
    var sent = 0
    var responding = false
  }

  private func serve() {
    var connections: [Connection] = []
    defer { for connection in connections { close(connection.fd) } }
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
      var fds = [pollfd(fd: wake.read, events: Int16(POLLIN), revents: 0)]
      for fd in listeners { fds.append(pollfd(fd: fd, events: Int16(POLLIN), revents: 0)) }
      for connection in connections {
        fds.append(
          pollfd(
            fd: connection.fd, events: Int16(connection.responding ? POLLOUT : POLLIN),
            revents: 0))
      }
      let now = Self.monotonicSeconds()
      let nearest = connections.map(\.deadline).min()
      let timeout =
        nearest.map { Int32(max(0, min(60_000, (($0 - now) * 1000).rounded(.up)))) } ?? -1
      let ready = poll(&fds, nfds_t(fds.count), timeout)
      if ready < 0 && errno != EINTR { return }
      if fds[0].revents != 0 { return }

      // Answer or drop the clients first, so that a burst of new ones cannot starve them.
      let after = Self.monotonicSeconds()
      var open: [Connection] = []
      open.reserveCapacity(connections.count)
      for (index, var connection) in connections.enumerated() {
        let events = ready > 0 ? fds[1 + listeners.count + index].revents : 0
        var keep = after < connection.deadline
        if keep && events != 0 {
          keep =
            connection.responding
            ? send(&connection)
            : receive(&connection, buffer: &buffer, now: after)
        }
        if keep { open.append(connection) } else { close(connection.fd) }
      }
      connections = open

      for (index, listener) in listeners.enumerated() where fds[1 + index].revents != 0 {
        while true {
          let fd = accept(listener, nil, nil)
          if fd < 0 {
            if errno == EINTR || errno == ECONNABORTED { continue }
            break
          }
          _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
          _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
          if connections.count >= maxConnections {
            close(fd)
            continue
          }
          connections.append(Connection(fd: fd, deadline: Self.monotonicSeconds() + requestTimeout))
        }
      }
    }
  }

  /// Reads what the client sent; once the request head is complete, prepares the response.
  /// Returns false when the connection is to be closed.
  private func receive(_ connection: inout Connection, buffer: inout [UInt8], now: Double) -> Bool {
    let count = buffer.withUnsafeMutableBytes { recv(connection.fd, $0.baseAddress, $0.count, 0) }
    if count < 0 { return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR }
    if count == 0 { return false }
    // Only the new bytes (and the three before them) can complete the blank line.
    let from = max(0, connection.request.count - 3)
    connection.request.append(contentsOf: buffer[0..<count])
    let head = connection.request
    let complete =
      head.count >= Self.maxHeadBytes || Self.endsHead(head[from...])
    guard complete else { return true }
    connection.response = Array(respond(to: head).utf8)
    connection.request = []
    connection.responding = true
    connection.deadline = now + requestTimeout
    return send(&connection)
  }

  /// Sends what the socket takes; returns false when done (or failed): the connection closes.
  private func send(_ connection: inout Connection) -> Bool {
    while connection.sent < connection.response.count {
      let count = connection.response.withUnsafeBytes {
        Glibc.send(
          connection.fd, $0.baseAddress! + connection.sent, $0.count - connection.sent,
          Int32(MSG_NOSIGNAL))
      }
      if count < 0 { return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR }
      if count == 0 { return false }
      connection.sent += count
    }
    return false
  }

  /// Whether `bytes` hold the blank line that ends a request head (CRLF CRLF, or LF LF).
  private static func endsHead(_ bytes: ArraySlice<UInt8>) -> Bool {
    var index = bytes.startIndex
    while index < bytes.endIndex {
      if bytes[index] == 10 {
        let next = index + 1
        if next < bytes.endIndex && bytes[next] == 10 { return true }
        if next + 1 < bytes.endIndex && bytes[next] == 13 && bytes[next + 1] == 10 { return true }
      }
      index += 1
    }
    return false
  }

  private static func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
  }

  /// The HTTP response to a request head.
  private func respond(to request: [UInt8]) -> String {
    let line = String(decoding: request.prefix { $0 != 13 && $0 != 10 }, as: UTF8.self)
    let parts = line.split(separator: " ")
    if parts.count >= 2, parts[0] == "GET",
      parts[1] == "/metrics" || parts[1].hasPrefix("/metrics?")
    {
      let body = render()
      return
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
        + "Content-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body
    }
    if parts.count >= 2, parts[0] == "GET",
      parts[1] == "/" || parts[1] == "/index.html" || parts[1].hasPrefix("/?")
    {
      let body = StatusPage.render(server)
      return
        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nCache-Control: no-store\r\n"
        + "Content-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body
    }
    let body = "not found: metrics are at /metrics, the status page at /\n"
    return
      "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\n"
      + "Connection: close\r\n\r\n" + body
  }

  /// Calls each loaded version answered, by status code, and their latency, with the version's
  /// role now (canary, stable, other): a canary's errors and p99 beside stable's.
  func renderVersionTraffic(_ snapshot: RegistrySnapshot, into out: inout String) {
    var calls = ""
    var latency = ""
    for name in snapshot.models.keys.sorted() {
      let entry = snapshot.models[name]!
      for version in entry.versions.keys.sorted() {
        guard let served = entry.versions[version]?.served else { continue }
        let labels =
          "model=\"\(Self.escapeLabel(name))\",version=\"\(version)\",role=\"\(entry.role(of: version))\""
        let counters = served.traffic.counters
        for (code, count) in counters.callsByCode {
          calls += "recserve_version_calls_total{\(labels),code=\"\(code)\"} \(count)\n"
        }
        latency += Self.histogram("recserve_version_latency_seconds", labels: labels, counters)
      }
    }
    out +=
      "# HELP recserve_version_calls_total Predict, Rank and SimilarItems calls a loaded model version answered, by status code; role is what the version does now (canary, stable or other).\n"
    out += "# TYPE recserve_version_calls_total counter\n"
    out += calls
    out +=
      "# HELP recserve_version_latency_seconds Time from accepting a call to sending its status, by the model version that answered it.\n"
    out += "# TYPE recserve_version_latency_seconds histogram\n"
    out += latency
  }

  /// The Prometheus histogram of `stats`' latency buckets: `name_bucket` (cumulative, by upper
  /// bound), `name_sum` and `name_count`, each with `labels` (`key="value",...`).
  static func histogram(_ name: String, labels: String, _ stats: MethodStats) -> String {
    let counts = stats.bucketCounts
    let total = counts.reduce(0, +)
    var out = ""
    var cumulative = 0
    for (index, bound) in MethodStats.bucketBounds.enumerated() {
      cumulative += counts[index]
      out += "\(name)_bucket{\(labels),le=\"\(bound)\"} \(cumulative)\n"
    }
    out += "\(name)_bucket{\(labels),le=\"+Inf\"} \(total)\n"
    out += "\(name)_sum{\(labels)} \(stats.totalSeconds)\n"
    out += "\(name)_count{\(labels)} \(total)\n"
    return out
  }

  /// A Prometheus label value: backslash, double quote and newline escaped.
  static func escapeLabel(_ text: String) -> String {
    text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
      .replacingOccurrences(of: "\n", with: "\\n")
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
    for method in stats where method.bucketCounts.contains(where: { $0 > 0 }) {
      out += Self.histogram(
        "recserve_rpc_latency_seconds", labels: "method=\"\(method.path)\"", method)
    }
    if let batcher = server.batcher {
      out +=
        "# HELP recserve_rank_batches_total Catalog scans the Rank batcher ran for queued requests.\n"
      out += "# TYPE recserve_rank_batches_total counter\n"
      out += "recserve_rank_batches_total \(batcher.batches.load(ordering: .relaxed))\n"
      out +=
        "# HELP recserve_rank_batched_requests_total Rank requests served by the batcher (the rest ran alone).\n"
      out += "# TYPE recserve_rank_batched_requests_total counter\n"
      out += "recserve_rank_batched_requests_total \(batcher.batched.load(ordering: .relaxed))\n"
    }
    let snapshot = server.registry.snapshot
    out +=
      "# HELP recserve_model_serving_version The version a request naming no version or label gets (0: none).\n"
    out += "# TYPE recserve_model_serving_version gauge\n"
    for name in snapshot.models.keys.sorted() {
      out +=
        "recserve_model_serving_version{model=\"\(name)\"} \(snapshot.models[name]!.serving?.version ?? 0)\n"
    }
    renderVersionTraffic(snapshot, into: &out)
    renderEvents(into: &out)
    out += "# HELP recserve_model_versions Versions on disk, by state.\n"
    out += "# TYPE recserve_model_versions gauge\n"
    for name in snapshot.models.keys.sorted() {
      var counts: [String: Int] = ["available": 0, "failed": 0, "loading": 0, "unloaded": 0]
      for record in snapshot.models[name]!.versions.values {
        counts[record.state.name.lowercased(), default: 0] += 1
      }
      for state in counts.keys.sorted() {
        out += "recserve_model_versions{model=\"\(name)\",state=\"\(state)\"} \(counts[state]!)\n"
      }
    }
    return out
  }
}
