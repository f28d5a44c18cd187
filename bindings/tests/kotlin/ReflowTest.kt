// Reflow's Kotlin bindings, used as an Android app would: two loopback nodes in one JVM
// (a ticket, sync, a callback), typed errors, close. Compiled with kotlinc against the
// generated sources (bindings/generated/kotlin) and run on the JVM with JNA loading the
// cdylib; see run.sh. Every node binds 127.0.0.1 only, with no relays and no address lookup
// (`loopback = true`). Waits are on a CountDownLatch with a timeout, never fixed sleeps.

import java.nio.file.Files
import java.util.concurrent.Semaphore
import java.util.concurrent.TimeUnit
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertTrue
import kotlinx.coroutines.runBlocking
import uniffi.reflow_bindings.*

const val WAIT_SECONDS = 30L
const val TTL_SECONDS = 600UL

fun openNode(name: String): ReflowNode = runBlocking {
    val dir = Files.createTempDirectory("reflow-kotlin-$name")
    openNode(OpenConfig(dataDir = dir.toString(), loopback = true))
}

fun produce(resource: String, value: String, agent: String = "ana") = EventInput(
    action = "produce",
    provider = agent,
    receiver = agent,
    resourceQuantity = MeasureRecord(value = value, unit = "kg"),
    creates = ResourceDescriptionInput(id = resource, name = resource.replaceFirstChar { it.uppercase() }),
)

/** Signals on every ledger update of the network it is subscribed to. */
class Updates : LedgerListener {
    val signal = Semaphore(0)
    override fun onUpdate(update: LedgerUpdateRecord) = signal.release()
}

/** Wait until `condition` holds on `node`, re-checking on each of its ledger updates. */
fun waitUntil(node: ReflowNode, net: String, what: String, condition: () -> Boolean) {
    val updates = Updates()
    val sub = node.subscribe(net, updates)
    try {
        val deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(WAIT_SECONDS)
        while (!condition()) {
            val left = deadline - System.nanoTime()
            check(left > 0 && updates.signal.tryAcquire(left, TimeUnit.NANOSECONDS)) {
                "timed out after $WAIT_SECONDS s waiting for $what"
            }
        }
    } finally {
        sub.cancel()
    }
}

fun main() {
    val a = openNode("a")
    val b = openNode("b")
    try {
        val net = a.createNetwork("market", AgentInput(id = "ana", name = "Ana"))
        a.createUnit(net, "kg", "kilogram", "kg")
        val ticket = a.invite(net, RoleKind.MEMBER, null, TTL_SECONDS, null)
        assertTrue(ticket.startsWith("reflow1"), ticket)
        val joined = runBlocking { b.joinWithTicket(ticket, AgentInput(id = "bo", name = "Bo")) }
        assertEquals(net, joined)
        assertEquals(listOf(net), b.networks())
        val members = b.members(net).associateBy { it.device }
        assertEquals(setOf(a.deviceId(), b.deviceId()), members.keys)
        assertEquals("bo", members[b.deviceId()]!!.agent)

        // A records; B's listener sees it arrive, and B's views have it.
        val eventId = a.recordEvent(net, produce("apples", "5"))
        waitUntil(b, net, "A's event on B") { b.heads(net).sorted() == a.heads(net).sorted() }
        val stock = b.inventory(net, ResourceFilterInput())
        assertEquals(listOf("apples"), stock.map { it.id })
        assertEquals(MeasureRecord(value = "5", unit = "kg"), stock[0].onhandQuantity)
        assertEquals("produce", b.event(net, eventId)!!.action)

        // B acts for bo: an event in ana's name is refused, typed, before anything is written.
        val before = b.heads(net)
        assertFailsWith<ReflowException.NotAllowed> {
            b.recordEvent(net, EventInput(action = "consume", provider = "ana", receiver = "ana",
                resourceInventoriedAs = "apples", resourceQuantity = MeasureRecord(value = "1", unit = "kg")))
        }
        assertEquals(before, b.heads(net))
        // ...and its own event goes through and reaches A.
        b.recordEvent(net, produce("pears", "2", agent = "bo"))
        waitUntil(a, net, "B's event on A") { a.heads(net).sorted() == b.heads(net).sorted() }
        assertEquals(setOf("apples", "pears"), a.inventory(net, ResourceFilterInput()).map { it.id }.toSet())

        // Typed errors for bad input, and the node keeps working.
        assertFailsWith<ReflowException.InvalidArgument> { b.recordEvent("not-a-network", produce("x", "1")) }
        assertFailsWith<ReflowException.UnknownNetwork> { b.recordEvent("0".repeat(64), produce("x", "1")) }
        assertFailsWith<ReflowException.InvalidTicket> { runBlocking { b.joinWithTicket("reflow1garbage", AgentInput(id = "bo", name = "Bo")) } }
        assertFailsWith<ReflowException.NotAllowed> { b.invite(net, RoleKind.MEMBER, null, TTL_SECONDS, null) }
        a.recordEvent(net, produce("plums", "1"))
    } finally {
        runBlocking {
            a.shutdown()
            b.shutdown()
        }
    }
    println("kotlin bindings test: ok")
}
