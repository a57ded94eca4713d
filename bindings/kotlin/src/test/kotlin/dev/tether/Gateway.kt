// A real tether-server process for the tests: started on 127.0.0.1 with a port the OS
// picks (read back from its "gateway listening" log line), the embedded broker, a fixed
// JWT secret and admin key; tokens minted here with HMAC-SHA256; the backend HTTP API
// (/v1) called with java.net.http.

package dev.tether

import java.io.File
import java.net.URI
import java.net.http.HttpClient
import java.net.http.HttpRequest
import java.net.http.HttpResponse
import java.time.Duration
import java.util.Base64
import java.util.concurrent.CompletableFuture
import java.util.concurrent.TimeUnit
import javax.crypto.Mac
import javax.crypto.spec.SecretKeySpec
import kotlinx.serialization.json.JsonElement
import kotlinx.serialization.json.JsonObject
import kotlinx.serialization.json.JsonPrimitive
import kotlinx.serialization.json.buildJsonArray
import kotlinx.serialization.json.buildJsonObject
import kotlinx.serialization.json.jsonArray
import kotlinx.serialization.json.jsonObject
import kotlinx.serialization.json.jsonPrimitive
import kotlinx.serialization.json.long
import kotlinx.serialization.json.longOrNull
import kotlinx.serialization.json.put
import kotlinx.serialization.json.Json

class Gateway private constructor(private val process: Process, val port: Int, private val log: List<String>) : AutoCloseable {
    val wsUrl get() = "ws://127.0.0.1:$port/ws"
    private val http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build()

    /** `POST /v1/send/user`; returns the inbox seq. */
    fun sendToUser(user: String, type: String, data: JsonElement): Long {
        val body = buildJsonObject {
            put("userId", user)
            put("app", APP)
            put("message", buildJsonObject { put("type", type); put("data", data) })
        }
        return post("/v1/send/user", body).jsonObject.getValue("seq").jsonPrimitive.long
    }

    /** `POST /v1/send/room`; returns how many connections it reached. */
    fun sendToRoom(room: String, type: String, data: JsonElement): Long = publishToRoom(room, type, data).delivered

    /** `POST /v1/send/room`, with the stream offset a room with history gave the message. */
    fun publishToRoom(room: String, type: String, data: JsonElement): Published {
        val body = buildJsonObject {
            put("room", room)
            put("app", APP)
            put("message", buildJsonObject { put("type", type); put("data", data) })
        }
        return published(post("/v1/send/room", body).jsonObject)
    }

    /** `POST /v1/send/app`: a broadcast to every connection of the app. */
    fun publishToApp(type: String, data: JsonElement): Published {
        val body = buildJsonObject {
            put("app", APP)
            put("message", buildJsonObject { put("type", type); put("data", data) })
        }
        return published(post("/v1/send/app", body).jsonObject)
    }

    private fun published(answer: JsonObject) =
        Published(
            delivered = answer["delivered"]?.jsonPrimitive?.longOrNull ?: 0,
            offset = answer["offset"]?.jsonPrimitive?.longOrNull,
        )

    /** `GET /v1/presence`: the user ids in [room], on every node. */
    fun presenceUsers(room: String): List<String> {
        val query = "/v1/presence?app=$APP&room=" + java.net.URLEncoder.encode(room, Charsets.UTF_8)
        val answer = call(HttpRequest.newBuilder(uri(query)).GET())
        return answer.jsonObject.getValue("members").jsonArray.map { it.jsonObject.getValue("userId").jsonPrimitive.content }.sorted()
    }

    /** `GET /v1/inbound`: every app message clients sent, oldest first. */
    fun inbound(): List<JsonObject> {
        val answer = call(HttpRequest.newBuilder(uri("/v1/inbound?app=$APP&limit=1000")).GET())
        return answer.jsonObject.getValue("messages").jsonArray.map { it.jsonObject }
    }

    private fun post(path: String, body: JsonObject): JsonElement =
        call(
            HttpRequest.newBuilder(uri(path))
                .header("Content-Type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofString(body.toString())),
        )

    private fun call(request: HttpRequest.Builder): JsonElement {
        val response = http.send(
            request.header("Authorization", "Bearer $ADMIN_KEY").timeout(Duration.ofSeconds(10)).build(),
            HttpResponse.BodyHandlers.ofString(),
        )
        check(response.statusCode() in 200..299) { "${request.build().uri()}: HTTP ${response.statusCode()} ${response.body()}" }
        return Json.parseToJsonElement(response.body())
    }

    private fun uri(path: String) = URI.create("http://127.0.0.1:$port$path")

    /** SIGTERM: the gateway closes every socket with 1012 and exits. */
    fun stop() {
        process.destroy()
        if (!process.waitFor(15, TimeUnit.SECONDS)) {
            process.destroyForcibly().waitFor()
        }
    }

    override fun close() = stop()

    /** The gateway's output so far, for failure messages. */
    fun logTail(lines: Int = 40): String = synchronized(log) { log.takeLast(lines).joinToString("\n") }

    companion object {
        const val APP = "jvm-tests"
        const val SECRET = "kotlin-tests-jwt-secret-0123456789abcdef"
        const val ADMIN_KEY = "kotlin-tests-admin-key-0123"

        private val binary: String =
            System.getProperty("tether.server.bin")
                ?: error("-Dtether.server.bin is not set (the pom sets it from rust.lib.dir)")

        /**
         * Starts a gateway on [port] (0: any free port) with [settings] (environment
         * variables, e.g. `WS_ROOM_HISTORY`) and waits until it listens.
         */
        fun start(port: Int = 0, settings: Map<String, String> = emptyMap()): Gateway {
            check(File(binary).canExecute()) { "no tether-server binary at $binary: run scripts/gen-bindings first" }
            val builder = ProcessBuilder(binary, "--bind", "127.0.0.1:$port").redirectErrorStream(true)
            builder.environment().apply {
                put("JWT_SECRET", SECRET)
                put("ADMIN_API_KEY", ADMIN_KEY)
                put("LOG_FORMAT", "json")
                put("RUST_LOG", "info")
                // Quick heartbeats so a dead socket is noticed within the test timeouts.
                put("WS_HEARTBEAT_INTERVAL", "2000")
                put("WS_CONNECTION_TIMEOUT", "10000")
                put("SHUTDOWN_TIMEOUT", "2000")
                // The embedded broker: this gateway must not join someone's Redis.
                listOf("REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "REDIS_DB", "REDIS_CLUSTER").forEach { remove(it) }
                putAll(settings)
            }
            val process = builder.start()
            val log = mutableListOf<String>()
            val listening = CompletableFuture<Int>()
            Thread {
                // Drains the output for the whole life of the process, so the pipe never
                // fills up and blocks the gateway.
                try {
                    process.inputStream.bufferedReader().forEachLine { line ->
                        synchronized(log) { log.add(line) }
                        if (!listening.isDone && line.contains("gateway listening")) {
                            val addr = Json.parseToJsonElement(line).jsonObject["addr"]?.jsonPrimitive?.content
                            val boundPort = addr?.substringAfterLast(':')?.toIntOrNull()
                            if (boundPort != null) listening.complete(boundPort)
                            else listening.completeExceptionally(IllegalStateException("no addr in: $line"))
                        }
                    }
                } catch (_: java.io.IOException) {
                    // stop() closed the stream.
                }
                listening.completeExceptionally(IllegalStateException("tether-server exited: ${synchronized(log) { log.joinToString("\n") }}"))
            }.apply { isDaemon = true; name = "tether-server-log" }.start()
            val bound = try {
                listening.get(30, TimeUnit.SECONDS)
            } catch (e: Exception) {
                process.destroyForcibly()
                throw IllegalStateException("tether-server did not start: ${synchronized(log) { log.joinToString("\n") }}", e)
            }
            return Gateway(process, bound, log)
        }

        /** An HS256 JWT for [user] on [APP], valid [ttlSeconds]. */
        fun token(user: String, ttlSeconds: Long = 3600, secret: String = SECRET): String {
            val header = """{"alg":"HS256","typ":"JWT"}"""
            val claims = buildJsonObject {
                put("sub", user)
                put("exp", System.currentTimeMillis() / 1000 + ttlSeconds)
                put("apps", buildJsonArray { add(JsonPrimitive(APP)) })
            }
            val b64 = Base64.getUrlEncoder().withoutPadding()
            val signingInput = b64.encodeToString(header.toByteArray()) + "." + b64.encodeToString(claims.toString().toByteArray())
            val mac = Mac.getInstance("HmacSHA256").apply { init(SecretKeySpec(secret.toByteArray(), "HmacSHA256")) }
            return signingInput + "." + b64.encodeToString(mac.doFinal(signingInput.toByteArray()))
        }
    }
}

/** What the backend API answered a publish: connections reached, and the stream offset (streams only). */
data class Published(val delivered: Long, val offset: Long?)
