//! The routing decision allocates nothing: the proxy's own `resolve`
//! (identify the tenant, classify the path, look the pool up, admit), then
//! selecting an endpoint — counted with a counting global allocator.

use mirador_router::api::Listener;
use mirador_router::config::parse;
use mirador_router::proxy::{resolve, RequestCtx};
use mirador_router::routing::{RoutingTable, Shared};
use mirador_router::upstream::{Pick, Tried};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn the_routing_decision_allocates_nothing() {
    let text: String = (0..1000)
        .map(|i| {
            format!(
                "[tenants.t{i}.metrics]\nendpoints = [\"http://127.0.0.1:{}\", \"http://127.0.0.2:{}\"]\n",
                20000 + i,
                20000 + i
            )
        })
        .collect();
    let table = RoutingTable::build(&parse("a.toml", &text).unwrap(), &Shared::for_tests());
    let requests: Vec<pingora::http::RequestHeader> = ["t1", "t500", "t999"]
        .map(|tenant| {
            let mut request =
                pingora::http::RequestHeader::build("GET", b"/prometheus/api/v1/query_range", None).unwrap();
            request.insert_header("X-Tenant-ID", tenant).unwrap();
            request
        })
        .into();
    let mut contexts: Vec<RequestCtx> = (0..10_000).map(|_| RequestCtx::new()).collect();
    // Built once before serving, as the server does.
    mirador_router::api::prepare();
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    let mut picked = 0;
    for (i, ctx) in contexts.iter_mut().enumerate() {
        resolve(&table, Listener::Unified, &requests[i % 3], None, ctx).unwrap();
        let pool = ctx.pool.as_ref().unwrap();
        if let Pick::Endpoint(index) = pool.select(Tried::default()) {
            picked += index;
        }
    }
    let allocations = ALLOCATIONS.load(Ordering::SeqCst) - before;
    assert!(picked > 0);
    assert_eq!(allocations, 0, "allocations in 10,000 routing decisions");
}
