//! [`Server`]: the connection management of an event-loop TCP server, so an app only
//! writes its protocol.
//!
//! The server accepts every waiting connection, reads what arrived into each
//! connection's [`Conn::input`], lets the [`Handler`] turn complete requests into
//! replies appended to [`Conn::output`], and sends them without blocking, watching each
//! socket for exactly what it waits for (readable; writable while replies are queued).
//! A client whose replies pile up unread beyond [`ServerOptions::max_pending_output`]
//! is not read from until it catches up.
//!
//! One poll round is: wait for ready sockets → accept → read and handle input of every
//! ready connection → [`Handler::before_send`] once → send. So a handler can make the
//! effects of all requests of a round durable with one write before any reply leaves
//! (group commit).
//!
//! ```ignore
//! struct Echo;
//! impl Handler for Echo {
//!     type State = ();
//!     fn input(&mut self, c: &mut Conn<()>) -> Flow {
//!         let data = core::mem::take(&mut c.input);
//!         c.output.extend_from_slice(&data);
//!         Flow::Continue
//!     }
//! }
//! let listener = TcpListener::bind(7)?;
//! Server::new(listener, ServerOptions::default())?.run(&mut Echo)?;
//! ```
//!
//! A shutdown request from the host ([`crate::lifecycle`]) drains the server: it stops
//! accepting (the listener is closed), keeps serving the connections it has until each
//! has no unanswered input and no unsent output (then closes it), and returns `Ok`
//! once none is left or [`ServerOptions::shutdown_grace`] has passed.
//!
//! Long answers (a big file) are produced piecewise: the handler sets
//! [`Conn::streaming`] and appends a first piece; while it stays set, the server reads
//! no more input from that client and calls [`Handler::more_output`] each time the
//! output has been sent, until the handler clears it.

use super::{Error, Interest, Poller, Result, Shutdown, SocketAddrV4, TcpListener, TcpStream};
use super::{Event, Token};
use crate::time;
use alloc::vec::Vec;
use core::time::Duration;

const LISTENER: Token = Token(usize::MAX);

/// How often a draining server looks at its connections.
const DRAIN_POLL: Duration = Duration::from_millis(10);

/// True once the host has asked for a shutdown: seen by the last wait, or (every 256th
/// round, for a server so busy it never waits) asked for directly.
fn shutdown_seen(round: u64) -> bool {
    crate::lifecycle::shutdown_requested()
        || (round % 256 == 0 && crate::lifecycle::poll_shutdown())
}

/// What the connection does after the handler ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Keep serving it.
    Continue,
    /// Send what is queued, then close it; unread and unhandled input is dropped.
    Close,
    /// Send what is queued in this round, close every connection and return from
    /// [`Server::run`].
    Shutdown,
}

/// One client connection, as the [`Handler`] sees it.
#[derive(Debug)]
pub struct Conn<S> {
    /// The client's address.
    pub peer: SocketAddrV4,
    /// Received bytes the handler has not consumed (it drains what it used).
    pub input: Vec<u8>,
    /// Bytes to send (the handler appends; the server removes what was sent).
    pub output: Vec<u8>,
    /// The handler has more to send for the current answer: the server reads nothing
    /// more from this client and calls [`Handler::more_output`] whenever the output
    /// is sent, until the handler clears this.
    pub streaming: bool,
    /// The handler's own per-connection state.
    pub state: S,
    stream: TcpStream,
    sent: usize,
    closing: bool,
    interest: Interest,
    /// The last round that handled this connection.
    round: u64,
}

impl<S> Conn<S> {
    /// Bytes queued and not yet handed to the network stack.
    #[must_use]
    pub fn pending_output(&self) -> usize {
        self.output.len() - self.sent
    }

    /// True once the connection will close after its output is sent.
    #[must_use]
    pub fn is_closing(&self) -> bool {
        self.closing
    }
}

/// An app's protocol: what to do with bytes that arrived.
pub trait Handler {
    /// Per-connection state, created with `Default` for each new connection.
    type State: Default;

    /// Bytes were appended to `c.input`: handle the complete requests at its front
    /// (draining them), append their answers to `c.output`. Also called for input
    /// left over when streaming ends.
    fn input(&mut self, c: &mut Conn<Self::State>) -> Flow;

    /// `c.streaming` is set and the output was sent: append the next piece (and clear
    /// `c.streaming` with the last one).
    fn more_output(&mut self, c: &mut Conn<Self::State>) -> Flow {
        c.streaming = false;
        Flow::Continue
    }

    /// Called once per round after every ready connection's input was handled and
    /// before any of this round's output is sent. An error stops the server.
    fn before_send(&mut self) -> core::result::Result<(), alloc::string::String> {
        Ok(())
    }

    /// Called once per round before any input is handled (after waiting).
    fn tick(&mut self) {}

    /// A connection was accepted.
    fn connected(&mut self, _c: &mut Conn<Self::State>) {}

    /// A connection is being dropped (closed by either side, or an error).
    fn closed(&mut self, _c: &mut Conn<Self::State>) {}
}

/// Settings of a [`Server`].
#[derive(Clone, Copy, Debug)]
pub struct ServerOptions {
    /// Stop reading from a client whose unsent output reaches this many bytes.
    pub max_pending_output: usize,
    /// Longest wait for events: [`Handler::tick`] runs at least this often (None:
    /// only when something happens).
    pub tick: Option<Duration>,
    /// Print `PEER: connected` / `PEER: closed`.
    pub log: bool,
    /// Prefix of error messages (`NAME: accept: …`).
    pub name: &'static str,
    /// After a shutdown request, how long connections with unfinished requests are
    /// still served before they are closed anyway.
    pub shutdown_grace: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_pending_output: 256 * 1024,
            tick: None,
            log: false,
            name: "server",
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Errors that end [`Server::run`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerError {
    /// The network stack failed.
    Net(Error),
    /// [`Handler::before_send`] failed.
    Handler(alloc::string::String),
}

impl core::fmt::Display for ServerError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ServerError::Net(e) => write!(f, "network: {e}"),
            ServerError::Handler(e) => f.write_str(e),
        }
    }
}

impl From<Error> for ServerError {
    fn from(e: Error) -> Self {
        ServerError::Net(e)
    }
}

/// An event-loop server over a non-blocking listener and a [`Poller`].
#[derive(Debug)]
pub struct Server<S> {
    /// None once draining after a shutdown request.
    listener: Option<TcpListener>,
    poller: Poller,
    opts: ServerOptions,
    conns: Vec<Option<Conn<S>>>,
    free: Vec<usize>,
    /// Connections with input left over after streaming: handled next round.
    again: Vec<usize>,
}

impl<S: Default> Server<S> {
    /// A server accepting on `listener` (made non-blocking here).
    pub fn new(mut listener: TcpListener, opts: ServerOptions) -> Result<Server<S>> {
        listener.set_nonblocking(true)?;
        let poller = Poller::new()?;
        poller.register(&listener, LISTENER, Interest::READABLE)?;
        Ok(Server {
            listener: Some(listener),
            poller,
            opts,
            conns: Vec::new(),
            free: Vec::new(),
            again: Vec::new(),
        })
    }

    /// Open connections.
    #[must_use]
    pub fn connections(&self) -> usize {
        self.conns.iter().flatten().count()
    }

    /// Serves until the handler asks for [`Flow::Shutdown`] or the host requests a
    /// shutdown and the server has drained (then `Ok`), or the network or the handler
    /// fails.
    pub fn run<H: Handler<State = S>>(
        &mut self,
        handler: &mut H,
    ) -> core::result::Result<(), ServerError> {
        crate::lifecycle::handle_shutdown();
        let mut events: Vec<Event> = Vec::new();
        let mut touched: Vec<usize> = Vec::new();
        let mut round = 0u64;
        // Set when draining: the moment unfinished connections are closed anyway.
        let mut drain_until: Option<time::Instant> = None;
        loop {
            round += 1;
            let timeout = if !self.again.is_empty() {
                Some(Duration::ZERO)
            } else if drain_until.is_some() {
                Some(DRAIN_POLL)
            } else {
                self.opts.tick
            };
            self.poller.wait(&mut events, timeout)?;
            if drain_until.is_none() && shutdown_seen(round) {
                drain_until = Some(self.start_draining());
            }
            handler.tick();
            touched.clear();
            let mut shutdown = false;
            // Input.
            let again = core::mem::take(&mut self.again);
            let tokens = again
                .iter()
                .map(|&i| Token(i))
                .chain(events.iter().map(|e| e.token));
            for token in tokens {
                if token == LISTENER {
                    self.accept_all(handler);
                    continue;
                }
                let i = token.0;
                let Some(Some(c)) = self.conns.get_mut(i) else {
                    continue;
                };
                if c.round == round {
                    continue;
                }
                c.round = round;
                touched.push(i);
                let leftover = again.contains(&i);
                match read_input(c, handler, self.opts.max_pending_output, leftover) {
                    Some(Flow::Shutdown) => shutdown = true,
                    Some(_) => {}
                    None => c.closing = true,
                }
            }
            handler.before_send().map_err(ServerError::Handler)?;
            // Output.
            for &i in &touched {
                let Some(Some(c)) = self.conns.get_mut(i) else {
                    continue;
                };
                let was_streaming = c.streaming;
                let keep = match send_output(c, handler) {
                    Some(Flow::Shutdown) => {
                        shutdown = true;
                        true
                    }
                    Some(_) => update_interest(c, &self.poller, Token(i), &self.opts),
                    None => false,
                };
                if !keep && !shutdown {
                    // (When shutting down, close_all closes it with the others and
                    // runs the stack until its FIN is out.)
                    self.drop_conn(i, handler);
                } else if was_streaming && !c.streaming && !c.closing && !c.input.is_empty() {
                    // Streaming ended with requests waiting in the buffer.
                    self.again.push(i);
                }
            }
            if shutdown {
                self.close_all();
                return Ok(());
            }
            if let Some(until) = drain_until {
                if self.drain_round(handler, until) {
                    self.close_all();
                    return Ok(());
                }
            }
        }
    }

    /// Closes the listener (new clients are refused); returns when unfinished
    /// connections will be closed anyway.
    fn start_draining(&mut self) -> time::Instant {
        if let Some(listener) = self.listener.take() {
            let _ = self.poller.deregister(&listener);
        }
        if self.opts.log {
            crate::println!("{}: shutdown requested: draining", self.opts.name);
        }
        let now = time::Instant::now();
        now.checked_add(self.opts.shutdown_grace).unwrap_or(now)
    }

    /// One draining step: closes every connection that has nothing left to answer or
    /// send; true when none is left or the grace period is over.
    fn drain_round<H: Handler<State = S>>(
        &mut self,
        handler: &mut H,
        until: time::Instant,
    ) -> bool {
        for i in 0..self.conns.len() {
            let done = self.conns[i]
                .as_ref()
                .is_some_and(|c| c.input.is_empty() && c.pending_output() == 0 && !c.streaming);
            if done {
                self.drop_conn(i, handler);
            }
        }
        self.connections() == 0 || time::Instant::now() >= until
    }

    fn drop_conn<H: Handler<State = S>>(&mut self, i: usize, handler: &mut H) {
        if let Some(mut c) = self.conns[i].take() {
            handler.closed(&mut c);
            if self.opts.log {
                crate::println!("{}: closed", c.peer);
            }
            // Dropping the stream closes it gracefully (FIN after queued data).
        }
        self.free.push(i);
    }

    fn accept_all<H: Handler<State = S>>(&mut self, handler: &mut H) {
        let Some(listener) = self.listener.as_mut() else {
            return;
        };
        loop {
            match listener.accept() {
                Ok((mut stream, peer)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let i = self.free.pop().unwrap_or_else(|| {
                        self.conns.push(None);
                        self.conns.len() - 1
                    });
                    if self
                        .poller
                        .register(&stream, Token(i), Interest::READABLE)
                        .is_err()
                    {
                        self.free.push(i);
                        continue;
                    }
                    if self.opts.log {
                        crate::println!("{peer}: connected");
                    }
                    let mut c = Conn {
                        peer,
                        input: Vec::new(),
                        output: Vec::new(),
                        streaming: false,
                        state: S::default(),
                        stream,
                        sent: 0,
                        closing: false,
                        interest: Interest::READABLE,
                        round: 0,
                    };
                    handler.connected(&mut c);
                    self.conns[i] = Some(c);
                }
                Err(Error::WouldBlock) => return,
                Err(e) => {
                    crate::eprintln!("{}: accept: {e}", self.opts.name);
                    return;
                }
            }
        }
    }

    /// Closes every connection (FIN after the data already queued in the stack) and
    /// runs the stack until the peers have closed too, for at most a second.
    fn close_all(&mut self) {
        for c in self.conns.iter().flatten() {
            // Whatever the stack did not take yet is lost: push it first.
            let _ = c.stream.shutdown(Shutdown::Write);
        }
        let start = time::Instant::now();
        // At least one round, so the FINs of connections dropped just before leave.
        let _ = super::poll(Some(Duration::ZERO));
        while self.conns.iter().flatten().any(|c| c.stream.is_open())
            && start.elapsed() < Duration::from_secs(1)
        {
            let _ = super::poll(Some(Duration::from_millis(10)));
        }
        self.conns.clear();
        self.free.clear();
    }
}

/// Reads what arrived and lets the handler answer it. `None`: the connection failed.
fn read_input<H: Handler>(
    c: &mut Conn<H::State>,
    handler: &mut H,
    max: usize,
    leftover: bool,
) -> Option<Flow> {
    let mut flow = Flow::Continue;
    if leftover && !c.input.is_empty() && !c.streaming && !c.closing {
        flow = {
            let f = handler.input(c);
            apply(c, f)
        };
    }
    let mut eof = false;
    while !c.closing && !c.streaming && c.pending_output() < max {
        let input = &mut c.input;
        match c.stream.read_with(|data| {
            input.extend_from_slice(data);
            (data.len(), data.len())
        }) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(_) => {
                let f = {
                    let f = handler.input(c);
                    apply(c, f)
                };
                if f != Flow::Continue {
                    flow = f;
                }
            }
            Err(Error::WouldBlock) => break,
            Err(_) => return None,
        }
    }
    if eof {
        c.closing = true;
        c.input.clear();
    }
    Some(flow)
}

fn apply<S>(c: &mut Conn<S>, flow: Flow) -> Flow {
    if flow != Flow::Continue {
        c.closing = true;
        c.input.clear();
    }
    flow
}

/// Sends what is queued (refilling from the handler while streaming). `None`: the
/// connection is done (failed, or closing and everything sent).
fn send_output<H: Handler>(c: &mut Conn<H::State>, handler: &mut H) -> Option<Flow> {
    let mut flow = Flow::Continue;
    loop {
        while c.sent < c.output.len() {
            match c.stream.write(&c.output[c.sent..]) {
                Ok(n) => c.sent += n,
                Err(Error::WouldBlock) => return Some(flow),
                Err(_) => return None,
            }
        }
        c.output.clear();
        c.sent = 0;
        if c.streaming && !c.closing {
            let f = {
                let f = handler.more_output(c);
                apply(c, f)
            };
            if f != Flow::Continue {
                flow = f;
            }
            if !c.output.is_empty() {
                continue;
            }
            if c.streaming {
                // Nothing produced: try again next round.
                return Some(flow);
            }
        }
        if c.closing && flow != Flow::Shutdown {
            return None;
        }
        return Some(flow);
    }
}

fn update_interest<S>(c: &mut Conn<S>, poller: &Poller, token: Token, o: &ServerOptions) -> bool {
    let want = if c.sent < c.output.len() || c.streaming {
        if c.closing || c.streaming || c.pending_output() >= o.max_pending_output {
            Interest::WRITABLE
        } else {
            Interest::BOTH
        }
    } else {
        Interest::READABLE
    };
    if want != c.interest {
        if poller.reregister(&c.stream, token, want).is_err() {
            return false;
        }
        c.interest = want;
    }
    true
}
